"""The browser-like receiver's playout clock and NACK bookkeeping, on synthetic timings."""

from __future__ import annotations

import random

from loadtest.metrics import detect_freezes
from loadtest.playout import NACK_COUNT_TIMEOUT_S, RENDER_DELAY_S, RTT_MULT, RTT_MULT_ADD_CAP_S, PlayoutClock
from loadtest.receiver import NACK_RETRY_S, RetryingNackGenerator

FRAME_S = 1 / 30
TICKS = 3000  # 90 kHz RTP ticks per frame at 30 fps


def test_jittery_arrivals_are_shown_evenly_after_a_delay_that_covers_them():
    rng = random.Random(5)
    clock = PlayoutClock()
    shown, released = [], []
    for i in range(600):
        extra = rng.choice([0.0] * 8 + [0.15, 0.3])  # a fifth of the frames held up by the network (no loss)
        decodable = 1.0 + i * FRAME_S + 0.05 + extra
        released.append(max(decodable, released[-1]) if released else decodable)  # in decode order
        shown.append(clock.render_time((i * TICKS) & 0xFFFFFFFF, released[-1]))
    # released as they complete: bursty, frozen most of the time; shown on schedule: no freezes
    assert detect_freezes(released).count > 20
    late = shown[300:]
    assert detect_freezes(late).count <= 3
    # the delay the clock settled on covers the held-up frames, and no more than that
    assert 0.3 <= clock.target_s <= 0.3 + RENDER_DELAY_S + 0.01
    assert all(b >= a for a, b in zip(shown, shown[1:]))


def test_frames_delayed_by_retransmission_do_not_raise_the_delay_but_add_a_round_trip_once_common():
    # libwebrtc: such frames stay out of the jitter estimate; after NACK_LIMIT of them the
    # target gains min(0.9 RTT, 200 ms), and a frame later than its slot is shown when decodable
    clock = PlayoutClock(rtt_s=0.1)
    t0 = 5.0
    for i in range(30):  # clean: shown as soon as decodable
        assert abs(clock.render_time(i * TICKS, t0 + i * FRAME_S) - (t0 + i * FRAME_S + RENDER_DELAY_S)) < 1e-9
    shown, decodable = [], 0.0
    for i in range(30, 90):
        delayed = i % 10 == 0  # every tenth frame waited 400 ms for a retransmission
        received = t0 + i * FRAME_S + (0.4 if delayed else 0.0)
        decodable = max(received, decodable)  # the frames after it wait for it: decode order
        when = clock.render_time(i * TICKS, decodable, delayed_by_retransmission=delayed, received_at=received)
        shown.append((when, decodable, delayed))
    assert clock.frames_delayed_by_retransmission == 6
    slot = RTT_MULT * 0.1 + RENDER_DELAY_S
    assert abs(clock.target_s - slot) < 1e-9  # the waiting frames did not raise it: they arrived on time
    for when, decodable, delayed in shown[30:]:  # the round trip is in the target by now
        if delayed:
            assert when == decodable  # later than its slot: shown late, not awaited
    # the frames that waited behind it come out with it, then the schedule resumes
    assert abs(shown[-1][0] - (t0 + 89 * FRAME_S + slot)) < 1e-9
    clock = PlayoutClock(rtt_s=1.0)
    for i in range(5):
        clock.render_time(i * TICKS, t0 + i * FRAME_S, delayed_by_retransmission=True)
    assert abs(clock.target_s - (RTT_MULT_ADD_CAP_S + RENDER_DELAY_S)) < 1e-9  # capped


def test_the_round_trip_leaves_the_delay_after_a_minute_without_retransmissions():
    clock = PlayoutClock(rtt_s=0.1)
    for i in range(3):
        clock.render_time(i * TICKS, 1.0 + i * FRAME_S, delayed_by_retransmission=True)
    assert clock.target_s > 0.09
    later = 1.0 + NACK_COUNT_TIMEOUT_S + 1.0
    clock.render_time(int(later * 90000), later, delayed_by_retransmission=True)  # one, after a quiet minute
    assert clock.target_s == RENDER_DELAY_S


def test_a_clean_stream_is_shown_as_soon_as_it_is_decodable():
    clock = PlayoutClock()
    for i in range(100):
        t = 2.0 + i * FRAME_S
        assert abs(clock.render_time(i * TICKS + 0xFFFFF000, t) - (t + RENDER_DELAY_S)) < 1e-6  # across a wrap


class Packet:
    def __init__(self, seq: int) -> None:
        self.sequence_number = seq


def test_nacks_stop_for_packets_older_than_a_released_frame(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("loadtest.receiver.time.monotonic", lambda: now[0])
    nack = RetryingNackGenerator()
    nack.add(Packet(10))
    assert nack.add(Packet(14)) and nack.missing == [11, 12, 13]
    nack.clear_up_to(12)  # a keyframe from 13 on was released: 11 and 12 are no longer wanted
    now[0] += NACK_RETRY_S + 0.001
    assert nack.add(Packet(15)) is True and nack.missing == [13]


def test_audio_nacks_end_when_the_packet_could_no_longer_be_played(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("loadtest.receiver.time.monotonic", lambda: now[0])
    nack = RetryingNackGenerator(max_age_s=0.25)
    nack.add(Packet(1))
    assert nack.add(Packet(3)) and nack.missing == [2]
    now[0] += NACK_RETRY_S + 0.001
    assert nack.add(Packet(4)) and nack.missing == [2]  # an answer could still be in time
    now[0] += NACK_RETRY_S + 0.001
    assert nack.add(Packet(5)) is False and nack.given_up == 1  # it could not: stop asking


def test_a_jitter_buffer_target_from_the_page_is_a_floor_under_the_delay():
    clock = PlayoutClock(min_delay_s=0.3)  # RTCRtpReceiver.jitterBufferTarget = 300 ms
    for i in range(50):
        t = 2.0 + i * FRAME_S
        late = 0.2 if i == 40 else 0.0  # one frame waited 200 ms for a retransmission: still in its slot
        shown = clock.render_time(i * TICKS, t + late, delayed_by_retransmission=bool(late), received_at=t + late)
        assert abs(shown - (t + 0.3)) < 1e-9
