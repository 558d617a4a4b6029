"""The load test's figures: percentiles, freezes, send matching, per-stream metrics, frame assembly."""

from __future__ import annotations

import random

import pytest

from loadtest.frames import ReceiverFrameAssembler, h264_starts_frame, vp8_is_keyframe, vp8_starts_frame
from loadtest.metrics import (
    SendLog,
    Window,
    audio_stream_metrics,
    detect_freezes,
    percentile,
    run_metrics,
    summary_ms,
    video_stream_metrics,
)

FRAME = 1 / 30


# --- percentiles --------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy():
    values = [10, 20, 30, 40]
    assert percentile(values, 0) == 10
    assert percentile(values, 100) == 40
    assert percentile(values, 50) == 25
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile([7], 99) == 7
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2  # unsorted input


def test_summary_in_milliseconds():
    s = summary_ms([0.010, 0.020, 0.030, 0.040, 1.0])
    assert s == {"p50": 30.0, "p95": 808.0, "p99": 961.6, "max": 1000.0, "n": 5}
    assert summary_ms([]) == {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}


# --- freezes --------------------------------------------------------------------------------------


def steady(start: float, count: int, interval: float = FRAME) -> list[float]:
    return [start + i * interval for i in range(count)]


def test_smooth_playback_has_no_freeze():
    stats = detect_freezes(steady(0, 300))
    assert stats.count == 0 and stats.total_s == 0


def test_a_gap_over_avg_plus_150_ms_is_a_freeze():
    times = steady(0, 60) + steady(60 * FRAME + 0.3, 60)  # one interval of ~333 ms
    stats = detect_freezes(times)
    assert stats.count == 1
    assert stats.total_s == pytest.approx(FRAME + 0.3)
    assert stats.longest_s == pytest.approx(FRAME + 0.3)


def test_a_gap_under_the_threshold_is_not_a_freeze():
    # 30 fps: avg ~33 ms, so the threshold is ~avg + 150 ms (3 x avg is smaller)
    times = steady(0, 60) + steady(60 * FRAME + 0.12, 60)  # a 153 ms interval
    assert detect_freezes(times).count == 0


def test_at_low_frame_rates_three_times_the_average_is_the_threshold():
    # 5 fps: avg 200 ms; avg + 150 = 350 ms < 3 x avg = 600 ms
    assert detect_freezes(steady(0, 40, 0.2) + steady(40 * 0.2 + 0.3, 40, 0.2)).count == 0  # a 500 ms interval
    assert detect_freezes(steady(0, 40, 0.2) + steady(40 * 0.2 + 0.55, 40, 0.2)).count == 1  # 750 ms


def test_freezes_need_five_intervals_of_history():
    assert detect_freezes([0, 0.033, 0.066, 1.0]).count == 0
    assert detect_freezes([0, 0.033, 0.066, 0.1, 0.133, 0.166, 1.0]).count == 1


def test_the_interval_to_the_window_end_counts():
    stats = detect_freezes(steady(0, 60), end=60 * FRAME + 2.0)
    assert stats.count == 1
    assert stats.longest_s == pytest.approx(2.0 + FRAME)


def test_several_freezes_add_up():
    times, t = [], 0.0
    for _ in range(3):
        times += steady(t, 60)
        t = times[-1] + 0.5
    stats = detect_freezes(times)
    assert stats.count == 2
    assert stats.total_s == pytest.approx(1.0)


# --- matching sends --------------------------------------------------------------------------------


def test_a_receive_matches_the_latest_send_of_that_frame_before_it():
    log = SendLog([(0, 0.0), (1, 0.033), (0, 10.0), (1, 10.033)])
    assert log.match(0, 0.1) == 0.0
    assert log.match(0, 10.2) == 10.0
    assert log.match(1, 0.02) is None  # before any send of frame 1
    assert log.match(1, 5.0) is None  # too long after the send: not trusted
    assert log.match(7, 1.0) is None
    assert log.sent_between(0.0, 10.0) == 2


def test_video_stream_metrics_on_a_synthetic_stream():
    # 90 frames sent at 30 fps from t=10; frame 40 never arrives; the chain breaks at 40 until keyframe 60
    sends = [(i, 10 + i * FRAME) for i in range(90)]
    log = SendLog(sends)
    complete = [[i, t + 0.05, i % 60 == 0] for i, t in sends if i != 40]
    rendered = [[i, t + 0.06, not 40 <= i < 60] for i, t in sends if i != 40]
    decoded = [[i, t + 0.07] for i, t in sends if not 40 <= i < 60]
    stream = {"complete": complete, "rendered": rendered, "decoded": decoded}
    window = Window(10, 13)
    m = video_stream_metrics(stream, log, window, started_at=9.0)
    assert m["frames_sent"] == 90
    assert m["frames_complete"] == 89
    assert m["frames_delivered"] == 70
    assert m["frames_delivered_ratio"] == pytest.approx(70 / 90, abs=1e-4)
    assert m["undecodable_outputs"] == 19
    assert all(d == pytest.approx(0.05) for d in m["transport_s"])
    assert all(d == pytest.approx(0.07) for d in m["g2g_s"])
    assert m["freeze_count"] == 1 and m["longest_freeze_s"] == pytest.approx(21 * FRAME, abs=0.002)
    assert m["first_frame_s"] == pytest.approx(1.06)


def test_a_stream_that_shows_nothing_is_frozen_for_the_whole_window():
    log = SendLog([(i, i * FRAME) for i in range(90)])
    m = video_stream_metrics({"complete": [], "rendered": []}, log, Window(0, 3), started_at=0)
    assert m["frames_delivered"] == 0 and m["freeze_count"] == 1 and m["frozen_s"] == 3.0
    assert m["first_frame_s"] is None


def test_audio_in_time_uses_the_deadline():
    sends = [(i, i * 0.02) for i in range(100)]
    log = SendLog(sends)
    delays = [0.05] * 80 + [0.25] * 10  # 10 late, 10 never arrive
    arrivals = [[i, t + d] for (i, t), d in zip(sends, delays)]
    m = audio_stream_metrics({"arrivals": arrivals}, log, Window(0, 2), deadline_s=0.2)
    assert m["packets_sent"] == 100 and m["packets_arrived"] == 90 and m["packets_in_time"] == 80
    assert m["in_time_ratio"] == 0.8
    # what a larger playout buffer would buy: the late ten count from 300 ms on, the lost never
    assert m["in_time_by_deadline"] == {100: 80, 200: 80, 300: 90, 400: 90}


def test_run_metrics_pools_streams():
    sends = [[i, 100 + i * FRAME] for i in range(60)]
    record = {
        "window": {"start": 100, "end": 102},
        "participants": [{"id": "a", "join_started": 98}, {"id": "b", "join_started": 99}],
        "sends": {"a": {"video": sends, "audio": []}, "b": {"video": sends, "audio": []}},
        "streams": [
            {"subscriber": "b", "publisher": "a", "kind": "video", "probe": True,
             "complete": [[i, t + 0.02, False] for i, t in sends], "rendered": [[i, t + 0.03, True] for i, t in sends],
             "decoded": [[i, t + 0.04] for i, t in sends]},
            {"subscriber": "a", "publisher": "b", "kind": "video", "probe": False,
             "complete": [[i, t + 0.02, False] for i, t in sends[:30]],
             "rendered": [[i, t + 0.03, True] for i, t in sends[:30]]},
        ],
    }
    s = run_metrics(record)["summary"]
    assert s["frames_delivered_ratio"] == 0.75
    assert s["latency_ms"]["p50"] == 40.0 and s["latency_ms"]["n"] == 60
    assert s["transport_ms"]["p50"] == 20.0 and s["transport_ms"]["n"] == 90
    assert s["freeze_count"] == 1  # the second stream stops half way
    assert s["first_frame_ms"]["p50"] is not None
    assert s["audio_in_time_ratio"] is None  # no audio sent


# --- frame assembly ------------------------------------------------------------------------------------


def vp8_packets(frames: list[tuple[int, bool]], first_seq: int = 65500) -> list[dict]:
    """RTP-like packets for frames given as (packet count, keyframe); sequence numbers wrap."""
    out, seq = [], first_seq
    for n, (count, key) in enumerate(frames):
        body = (b"\x00\x00\x00\x9d\x01\x2a" if key else b"\x01\x00\x00") + bytes([n % 256]) * 20
        chunk = -(-len(body) // count)
        for k in range(count):
            out.append({"seq": seq & 0xFFFF, "ts": 3000 * n, "marker": k == count - 1,
                        "data": body[k * chunk:(k + 1) * chunk], "start": k == 0, "frame": n})
            seq += 1
    return out


def feed(assembler: ReceiverFrameAssembler, packets: list[dict], t: float = 0.0) -> list:
    released = []
    for p in packets:
        released += assembler.add(p["seq"], p["ts"], p["marker"], p["data"], t, starts_frame=p["start"])
    return released


def test_frames_complete_and_decode_in_order_across_the_sequence_wrap():
    packets = vp8_packets([(3, True)] + [(2, False)] * 20)
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, packets)
    assert [f.timestamp // 3000 for f in released] == list(range(21))
    assert released[0].keyframe and not any(f.keyframe for f in released[1:])
    assert assembler.frames_completed == 21 and assembler.frames_skipped == 0


def test_a_late_retransmission_releases_the_frames_waiting_on_it():
    packets = vp8_packets([(3, True)] + [(2, False)] * 10)
    missing = packets[6]  # in frame 2
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, [p for p in packets if p is not missing], t=1.0)
    assert [f.timestamp // 3000 for f in released] == [0, 1]
    assert assembler.waiting
    later = feed(assembler, [missing], t=2.0)
    assert [f.timestamp // 3000 for f in later] == list(range(2, 11))
    assert all(f.decodable_at == 2.0 for f in later)
    assert all(f.completed_at == 1.0 for f in later[1:])  # complete long before, decodable only now
    # only the frame whose packet came after later ones was NACKed (libwebrtc: delayed by retransmission)
    assert [f.delayed_by_retransmission for f in released + later] == [False, False, True] + [False] * 8


def test_a_lost_frame_breaks_the_chain_until_the_next_keyframe():
    spec = [(3, True)] + [(2, False)] * 9 + [(3, True)] + [(2, False)] * 4
    packets = [p for p in vp8_packets(spec) if p["frame"] != 4]  # frame 4 wholly lost
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, packets)
    assert [f.timestamp // 3000 for f in released] == [0, 1, 2, 3, 10, 11, 12, 13, 14]
    assert assembler.frames_skipped == 5  # frames 5-9: complete, never decodable
    assert assembler.decodable_timestamp(3000 * 12) and not assembler.decodable_timestamp(3000 * 6)


def test_the_frame_start_comes_from_the_payload_when_the_previous_packet_is_lost():
    packets = vp8_packets([(3, True), (2, False), (3, True)])
    lost_marker = packets[4]  # the last packet of frame 1: frame 2's start is only known from its payload
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, [p for p in packets if p is not lost_marker])
    assert [f.timestamp // 3000 for f in released] == [0, 2]  # the keyframe decodes at once


def test_assembly_under_random_loss_with_retransmission_recovers_every_frame():
    rng = random.Random(5)
    spec = [(8, True)] + [(rng.randint(1, 4), False) for _ in range(200)]
    packets = vp8_packets(spec)
    first_pass = [p for p in packets if rng.random() > 0.3]
    lost = [p for p in packets if p not in first_pass]
    rng.shuffle(lost)
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, first_pass) + feed(assembler, lost)
    assert [f.timestamp // 3000 for f in released] == list(range(len(spec)))
    assert assembler.frames_completed == len(spec)


def test_start_of_frame_detection_from_payloads():
    assert vp8_starts_frame(bytes([0x10, 0x00]))  # S=1, PID=0
    assert not vp8_starts_frame(bytes([0x00, 0x00]))
    assert not vp8_starts_frame(bytes([0x11, 0x00]))  # partition 1
    assert h264_starts_frame(bytes([0x67, 0x42, 0x00]))  # SPS
    assert h264_starts_frame(bytes([0x41, 0x88, 0x80]))  # P slice, first_mb_in_slice 0
    assert not h264_starts_frame(bytes([0x41, 0x08, 0x00]))  # a later slice of the picture
    assert not h264_starts_frame(bytes([0x65, 0x88, 0x80]))  # IDR slice: its SPS/PPS come first
    assert h264_starts_frame(bytes([0x5C, 0x81, 0x88]))  # FU-A start of a P slice
    assert not h264_starts_frame(bytes([0x5C, 0x01, 0x88]))  # FU-A continuation
    assert h264_starts_frame(bytes([0x78, 0x00, 0x02, 0x67, 0x42]))  # STAP-A beginning with an SPS
