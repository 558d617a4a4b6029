"""Transport-cc feedback as a subscriber's browser sends it: media/twcc_feedback.py.

Properties: parse_fci raises nothing but ValueError, whatever the bytes; what it returns
describes exactly packet_status_count packets; arrival lists whose deltas fit round-trip
through build_fci and parse_fci exactly at 250 us resolution (and within 125 us, without
drift, off it); whatever parses is encoded again to the same arrivals, unless its
reference time cannot be (the one thing build_fci refuses for a parsed feedback).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hypothesis import example, given
from hypothesis import strategies as st

from media.twcc_feedback import (
    DELTA_TICK_US,
    MAX_STATUS_COUNT,
    REFERENCE_MAX,
    REFERENCE_MIN,
    REFERENCE_TICK_US,
    build_fci,
    parse_fci,
)

from .support import fuzzed, note


@dataclass
class Arrivals:
    base: int
    feedback_count: int
    reference: int  # in 64 ms units
    times: list[Optional[int]]  # microseconds, multiples of 250 us


deltas = (st.integers(0, 0xFF) | st.integers(-0x8000, 0x7FFF)
          | st.sampled_from((0, 0xFF, 0x100, -1, 0x7FFF, -0x8000)))


@st.composite
def arrival_lists(draw: st.DrawFn, min_reference: int = REFERENCE_MIN) -> Arrivals:
    """Runs of one step each (a delta in 250 us units, or None for lost), some of them long;
    the first received packet lands 0-255 units after a 64 ms reference."""
    reference = draw(st.integers(min_reference, REFERENCE_MAX) | st.sampled_from((min_reference, REFERENCE_MAX, 0)))
    runs = draw(st.lists(st.tuples(st.none() | deltas, st.integers(1, 20) | st.sampled_from((8191, 8192, 9000))),
                         min_size=1, max_size=30))
    at = reference * REFERENCE_TICK_US + draw(st.integers(0, 0xFF)) * DELTA_TICK_US
    first = True
    times: list[Optional[int]] = []
    for step, length in runs:
        for _ in range(min(length, MAX_STATUS_COUNT - len(times))):
            if step is None:
                times.append(None)
                continue
            if not first:
                at += step * DELTA_TICK_US
            first = False
            times.append(at)
    base = draw(st.sampled_from((0, 0xFFFF, 0xFFF0)) | st.integers(0, 0xFFFF))
    return Arrivals(base, draw(st.integers(0, 0xFF)), reference, times)


def u16(value: int) -> bytes:
    return value.to_bytes(2, "big")


@st.composite
def raw_fcis(draw: st.DrawFn) -> bytes:
    """Header fields, chunks and delta bytes at random: reserved symbols, empty runs, counts
    the chunks do not reach or deltas do not cover."""
    count = draw(st.integers(0, 40) | st.sampled_from((0, 1, 0xFFFF)) | st.integers(0, 0xFFFF))
    chunk = (st.integers(0, 0xFFFF) | st.integers(0, 0x7FFF).map(lambda c: c & 0x601F)  # short runs
             | st.sampled_from((0x2000, 0x6001, 0x1FFF, 0x3FFF, 0x8000, 0xBFFF, 0xC000, 0xFFFF)))
    chunks = b"".join(map(u16, draw(st.lists(chunk, max_size=12))))
    header = u16(draw(st.integers(0, 0xFFFF))) + u16(count) + draw(st.binary(min_size=4, max_size=4))
    return header + chunks + draw(st.binary(max_size=60))


def built_fcis() -> st.SearchStrategy[bytes]:
    return arrival_lists().map(lambda a: build_fci(a.base, a.times, a.feedback_count))


@given(fuzzed(built_fcis() | raw_fcis(), max_random=200))
@example(bytes.fromhex("0000ffff00000000" + "1fff" * 8))  # 65535 packets, 65528 described
@example(bytes.fromhex("0000ffff00000000" + "3fff" * 9))  # 65535 small deltas claimed, none there
@example(bytes.fromhex("000000017fffff00" "4001" "7fff"))  # 8 s past the last reference time: not encodable again
def test_parse_fci_raises_only_value_error(data):
    try:
        feedback = parse_fci(data)
    except ValueError:
        note("malformed")
        return
    note("parsed")
    count = int.from_bytes(data[2:4], "big")
    assert len(feedback.arrivals) == count
    assert 0 <= feedback.base_sequence <= 0xFFFF and 0 <= feedback.feedback_count <= 0xFF
    assert feedback.reference_time_us % REFERENCE_TICK_US == 0
    assert REFERENCE_MIN <= feedback.reference_time_us // REFERENCE_TICK_US <= REFERENCE_MAX
    try:
        again = build_fci(feedback.base_sequence, feedback.arrivals, feedback.feedback_count)
    except ValueError as e:
        # the first arrival can be up to 8 s after a reference time at the top of its range
        assert "24 signed bits" in str(e)
        note("reference time out of range when encoded again")
        return
    assert parse_fci(again).arrivals == feedback.arrivals


@given(arrival_lists())
def test_arrivals_round_trip_at_250_us(arrivals):
    feedback = parse_fci(build_fci(arrivals.base, arrivals.times, arrivals.feedback_count))
    assert feedback.arrivals == tuple(arrivals.times)
    assert (feedback.base_sequence, feedback.feedback_count) == (arrivals.base, arrivals.feedback_count)
    if any(t is not None for t in arrivals.times):
        assert feedback.reference_time_us == arrivals.reference * REFERENCE_TICK_US
    note("some lost" if None in arrivals.times else "all received")


@given(arrival_lists(min_reference=REFERENCE_MIN + 1), st.lists(st.integers(-125, 124), min_size=1, max_size=50))
def test_arrivals_off_the_grid_round_within_125_us(arrivals, jitter):
    # a few offsets from the 250 us grid, repeated over the packets (lists can be 65535 long)
    times = [None if t is None else t + jitter[i % len(jitter)] for i, t in enumerate(arrivals.times)]
    parsed = parse_fci(build_fci(arrivals.base, times, arrivals.feedback_count)).arrivals
    assert parsed == tuple(arrivals.times)  # each rounds to its own 250 us point: no error accumulates
    assert all(p is None or t is not None and abs(p - t) <= 125 for p, t in zip(parsed, times))
