"""What the fuzz modules share: byte mutations, scaled settings, stand-in transports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

T = TypeVar("T")


def scaled(divisor: int, at_least: int = 10) -> settings:
    """The loaded profile's max_examples divided (tests whose every example is a whole stream)."""
    return settings(max_examples=max(at_least, settings.default.max_examples // divisor))


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes], max_edits: int = 4) -> bytes:
    """`base` with a few edits a network does or an attacker would: bit flips, bytes set to
    edge values, truncation, bytes inserted, cut out or repeated."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(("flip", "set", "truncate", "insert", "delete", "repeat")))
        pos = draw(st.integers(0, len(data))) if data else 0
        if op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(data):
            data[pos] = draw(st.sampled_from((0x00, 0x01, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "repeat" and pos < len(data):
            data[pos:pos] = data[pos:pos + draw(st.integers(1, 16))]
    return bytes(data)


def fuzzed(base: st.SearchStrategy[bytes], max_random: int = 1500) -> st.SearchStrategy[bytes]:
    """Well-formed input, the same mutated, or raw random bytes."""
    return st.one_of(base, mutated(base), st.binary(max_size=max_random))


# Text with lone surrogates, often: JSON's "\ud800" escape and aiohttp's surrogateescape
# decoding of non-UTF-8 header bytes put them in strings; st.text() leaves them out.
surrogate_text = st.lists(st.characters(categories=("Cs",)) | st.characters(), min_size=1, max_size=6).map("".join)


def note(label: str) -> None:
    """A hypothesis event (--hypothesis-show-statistics) from code plain tests share."""
    if currently_in_test_context():
        event(label)


def run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one example's coroutine on a fresh event loop (timers it leaves are dropped with it)."""
    async def main() -> T:
        return await make()
    return asyncio.run(main())


