"""Sequence numbers and timestamps stay continuous on a down-track."""

from __future__ import annotations

import random

from media.rewriter import StreamRewriter
from media.seqnum import seq_diff, ts_diff


def test_maps_a_source_continuously_and_keeps_gaps():
    r = StreamRewriter(90000, random.Random(1))
    r.switch_source(first_seq=1000, first_ts=5000, now=0.0)
    a = r.map(1000, 5000, now=0.0)
    b = r.map(1001, 5000, now=0.0)
    c = r.map(1005, 8000, now=0.033)  # 3 packets lost upstream
    assert seq_diff(b[0], a[0]) == 1
    assert seq_diff(c[0], b[0]) == 4  # the gap stays visible so the subscriber NACKs it
    assert ts_diff(c[1], a[1]) == 3000


def test_packets_from_before_the_start_point_are_dropped():
    r = StreamRewriter(90000, random.Random(2))
    assert r.map(10, 10) is None  # not started
    r.switch_source(first_seq=500, first_ts=0, now=0.0)
    assert r.map(499, 0) is None
    assert r.map(500, 0) is not None
    assert r.map(498, 0) is None


def test_a_long_stream_keeps_flowing_past_any_number_of_wraps():
    # a 16-bit comparison with the start point flipped 32768 packets in (3.6 min of 720p
    # video, found by a 10-minute soak): every later packet was dropped
    r = StreamRewriter(90000, random.Random(3))
    r.switch_source(first_seq=40000, first_ts=0, now=0.0)
    previous = None
    for i in range(140_000):  # past two wraps of the source and of the down-track
        seq = (40000 + i) % 65536
        mapped = r.map(seq, i * 3000 % (1 << 32), now=i / 150)
        assert mapped is not None, i
        if previous is not None:
            assert seq_diff(mapped[0], previous) == 1
        previous = mapped[0]
        if i % 9973 == 0 and i > 500:
            late = r.map((seq - 300) % 65536, 0)  # a retransmission of a recent packet still maps
            assert late is not None and seq_diff(previous, late[0]) == 300


def test_switching_source_continues_numbering_and_time():
    r = StreamRewriter(90000, random.Random(3))
    r.switch_source(first_seq=65530, first_ts=4_294_960_000, now=0.0)
    last = None
    for i in range(10):  # wraps both sequence number and timestamp of the source
        last = r.map((65530 + i) % 65536, (4_294_960_000 + i * 3000) % 2**32, now=i / 30)
    r.reset()
    r.switch_source(first_seq=7, first_ts=123, now=10 / 30 + 0.5)
    first_new = r.map(7, 123, now=10 / 30 + 0.5)
    assert seq_diff(first_new[0], last[0]) == 1
    # the timestamp advances by the wall time between the last old packet and the first new one
    assert abs(ts_diff(first_new[1], last[1]) - int((0.5 + 1 / 30) * 90000)) < 100


def test_sender_report_timestamps_follow_the_same_offset():
    r = StreamRewriter(48000, random.Random(4))
    r.switch_source(first_seq=1, first_ts=1000, now=0.0)
    seq, ts = r.map(1, 1000, now=0.0)
    assert r.map_timestamp(1000 + 960) == (ts + 960) % 2**32


def test_reserved_numbers_sit_between_source_packets_and_late_packets_fill_their_own_gap():
    r = StreamRewriter(90000, random.Random(4))
    r.switch_source(first_seq=65530, first_ts=0, now=0.0)
    out = {s: r.map(s % 65536, 0, now=0.0)[0] for s in (65530, 65532)}  # 65531 lost upstream
    first = r.reserve(2)  # e.g. two FEC packets after a frame
    assert seq_diff(first, out[65532]) == 1 and r.last_sequence_number == (first + 1) % 65536
    out[65533] = r.map(65533 % 65536, 0, now=0.0)[0]
    assert seq_diff(out[65533], first) == 2  # the next source packet comes after the reserved ones
    r.reserve(1)
    out[65536] = r.map(0, 0, now=0.0)[0]  # across the source's wrap
    # the late packet goes where the subscriber saw the gap, not after the reservations
    late = r.map(65531, 0, now=0.0)[0]
    assert seq_diff(late, out[65530]) == 1 and seq_diff(out[65532], late) == 1
    # a late packet between two reservations takes the offset of its own stretch
    assert r.map(65533, 0, now=0.0)[0] == out[65533]
    assert seq_diff(out[65536], out[65533]) == 3 + 1  # two lost upstream (gaps kept), one reserved


def test_late_packets_older_than_the_remembered_reservations_are_dropped_not_misplaced():
    from media.rewriter import MAX_RESERVATIONS

    r = StreamRewriter(90000, random.Random(5))
    r.switch_source(first_seq=0, first_ts=0, now=0.0)
    seen = {}
    for seq in range(0, 2 * (MAX_RESERVATIONS + 10), 2):  # every other packet "late"
        seen[seq] = r.map(seq, 0, now=0.0)[0]
        r.reserve(1)
    newest = max(seen)
    assert r.map(1, 0) is None  # too far back to know which offset it had
    assert seq_diff(seen[newest], r.map(newest - 1, 0)[0]) == 1  # recent ones still placed
    # a new source forgets every reservation
    r.switch_source(first_seq=7, first_ts=0, now=1.0)
    a, b = r.map(7, 0, now=1.0)[0], r.map(8, 0, now=1.0)[0]
    assert seq_diff(b, a) == 1


def test_skipped_publisher_fec_leaves_no_hole_and_its_numbers_are_never_sent():
    r = StreamRewriter(90000, random.Random(4))
    r.switch_source(first_seq=65530, first_ts=0, now=0.0)
    out = {s: r.map(s % 65536, 0, now=0.0)[0] for s in (65530, 65532)}  # 65531 lost upstream
    assert r.skip(65532, 65533)  # FEC after the frame's end at 65532...
    assert r.skip(65532, 65535)  # ...two more of it, the middle one lost
    reserved = r.reserve(1)  # our own FEC toward this subscriber may follow
    out[65536] = r.map(0, 3000, now=0.033)[0]  # next frame, across the wrap
    assert seq_diff(reserved, out[65532]) == 1 and seq_diff(out[65536], reserved) == 1  # no hole
    late = r.map(65531, 0, now=0.1)[0]
    assert seq_diff(out[65532], late) == 1  # a packet recovered late keeps its own place
    for fec in (65533, 65534, 65535):
        assert r.map(fec % 65536, 0, now=0.1) is None  # never a number another packet has
    # only from the newest packet mapped (or FEC skipped after it): what lies between may be media
    assert not r.skip(1, 3)  # 1 was not mapped
    assert not r.skip(65530, 65533)  # 65532 and 0 were mapped since
    assert not r.skip(0, 65)  # longer than any frame's FEC
    assert r.skip(0, 2)
    assert seq_diff(r.map(3, 6000, now=0.066)[0], out[65536]) == 1


def test_the_first_packet_after_a_switch_is_the_newest_sent() -> None:
    """FEC numbers reserved right after it must not reuse its number."""
    rewriter = StreamRewriter(clock_rate=90000, rng=random.Random(3))
    rewriter.switch_source(500, 7000, now=1.0)
    seq, ts = rewriter.map(500, 7000, now=1.0)
    assert rewriter.last_sequence_number == seq and rewriter.last_timestamp == ts
    assert rewriter.reserve(1) == (seq + 1) % 65536
