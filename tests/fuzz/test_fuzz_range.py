"""The replay API's HTTP Range handling (signalling/http_ranges.py, served through
signalling/replay_api.py): parse_range for a finished replay, and the Range header of a
replay still being prepared.

Properties: any header gives None (the whole body), a (first, last) inside the body, or
ValueError (its documented answer, sent as 416); a well-formed single range gives exactly
what RFC 9110 says; spaces anywhere change nothing; while a replay is prepared any header
gets 206 within what is ready, 416 or 503, and the bytes served are the bytes asked for.

What it found in signalling/ is fixed; the failing inputs stay as regression tests.
"""

from __future__ import annotations

from typing import Any, Optional
from unittest import mock

from aiohttp.test_utils import make_mocked_request
from hypothesis import event, example, given
from hypothesis import strategies as st

from signalling.http_ranges import parse_range
from signalling.replay_api import _media_response

from .support import run, surrogate_text

numbers = st.integers(0, 2000).map(str) | st.sampled_from(("", "0", "00", "9" * 30, "9" * 5000, "٣", "-1", "+1"))
utf8_range_headers = st.one_of(
    st.builds("bytes={}-{}".format, numbers, numbers),
    st.builds("{}={}-{}".format, st.sampled_from(("bytes", "Bytes", "items", "")), numbers, numbers),
    st.lists(st.builds("{}-{}".format, numbers, numbers), min_size=1, max_size=3).map(lambda r: "bytes=" + ",".join(r)),
    st.text(max_size=30),
)
range_headers = utf8_range_headers | surrogate_text  # what aiohttp's surrogateescape makes of non-UTF-8 bytes
sizes = st.integers(0, 3000) | st.sampled_from((0, 1, 2**40))


def spaced(header: str, positions: list[int]) -> str:
    for pos in sorted(positions, reverse=True):
        at = pos % (len(header) + 1)
        header = header[:at] + " " + header[at:]
    return header


@given(range_headers, sizes, st.lists(st.integers(0, 100), max_size=3))
@example("bytes=-0", 1000, [])
@example("bytes=1000-", 1000, [])
@example("bytes=0-", 0, [])
@example("bytes=" + "9" * 5000 + "-", 1000, [])
def test_parse_range_gives_the_whole_body_a_range_inside_it_or_value_error(header, size, spaces):
    try:
        wanted = parse_range(header, size)
    except ValueError:
        wanted_or_error: Any = ValueError
    else:
        wanted_or_error = wanted
        if wanted is not None:
            first, last = wanted
            assert 0 <= first <= last < size
    # spaces anywhere (the parser drops them) change nothing
    try:
        assert parse_range(spaced(header, spaces), size) == wanted_or_error
    except ValueError:
        assert wanted_or_error is ValueError


@given(st.none() | st.integers(0, 5000), st.none() | st.integers(0, 5000), st.integers(0, 3000))
def test_parse_range_of_a_single_range_is_what_rfc_9110_says(first, last, size):
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    expected: Optional[tuple[int, int]] | type[ValueError]
    if first is None and last is None:
        expected = None
    elif first is None:  # the last `last` bytes
        assert last is not None
        expected = (max(0, size - last), size - 1) if last > 0 and size > 0 else ValueError
    elif first >= size or (last is not None and last < first):
        expected = ValueError
    else:
        expected = (first, size - 1 if last is None else min(last, size - 1))
    try:
        assert parse_range(header, size) == expected
    except ValueError:
        assert expected is ValueError


# --- a replay being prepared ---------------------------------------------------------------------


class PreparingJob:
    """A ReplayJob whose first `ready` bytes are rendered, its size not yet known."""

    plan = None

    def __init__(self, ready: int) -> None:
        self.ready = ready

    def readable(self) -> tuple[int, Optional[int]]:
        return self.ready, None

    def read(self, first: int, end: int) -> bytes:
        assert 0 <= first <= end <= self.ready, (first, end)
        return bytes(i & 0xFF for i in range(first, end))

    def status(self) -> dict:
        return {"progress": 0.5}


class DirectService:
    async def _run(self, fn, *args):
        return fn(*args)


async def respond(header: str, ready: int) -> tuple[int, dict, bytes]:
    """_media_response's status, headers and body for one Range header (aiohttp's mocked request)."""
    written: list[bytes] = []

    async def write(data: bytes) -> None:
        written.append(bytes(data))

    writer = mock.Mock()
    writer.write_headers = writer.write_eof = writer.drain = mock.AsyncMock(return_value=None)
    writer.send_headers = mock.Mock(return_value=None)
    writer.write = write
    request = make_mocked_request("GET", "/replay/media", headers={"Range": header}, writer=writer)
    response = await _media_response(request, DirectService(), PreparingJob(ready))
    body = getattr(response, "body", None)
    return response.status, dict(response.headers), b"".join(written) if body is None else bytes(body)


# (aiohttp's mocked request encodes its headers as UTF-8: surrogates are parse_range's test above)
@given(utf8_range_headers, st.integers(0, 3000))
def test_a_replay_being_prepared_serves_what_is_ready_or_says_why_not(header, ready):
    status, headers, body = run(lambda: respond(header, ready))
    assert status in (206, 416, 503)
    event(f"preparing: {status}")
    if status == 206:
        span, _, total = headers["Content-Range"].removeprefix("bytes ").partition("/")
        first, last = map(int, span.split("-"))
        assert total == "*" and 0 <= first <= last < ready
        assert body == bytes(i & 0xFF for i in range(first, last + 1))


def test_a_range_past_the_digit_limit_while_preparing_is_refused_cleanly():
    status, _, _ = run(lambda: respond("bytes=" + "9" * 5000 + "-", 100))
    assert status in (416, 503)
