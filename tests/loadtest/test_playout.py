"""The browser-like receiver's playout clock and NACK bookkeeping, on synthetic timings."""

from __future__ import annotations

import random

from loadtest.metrics import FreezeDetector, detect_freezes
from loadtest.playout import (
    CALM_S,
    CAP_S,
    NACK_COUNT_TIMEOUT_S,
    POLICY_INTERVAL_S,
    RENDER_DELAY_S,
    RTT_MULT,
    RTT_MULT_ADD_CAP_S,
    STEP_S,
    PagePlayoutPolicy,
    PlayoutClock,
)
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


def test_the_page_policy_raises_the_floor_while_frames_freeze_up_to_its_cap():
    policy = PagePlayoutPolicy()
    t = 0.0
    assert policy.update(t, 0.0) == 0.0
    targets = []
    for _ in range(12):  # a 200 ms freeze every second: well over 2 % of the window
        t += POLICY_INTERVAL_S
        targets.append(policy.update(t, 0.2))
    # a step per reading that saw freezes with the current floor, never above the cap
    assert targets[:3] == [STEP_S, 2 * STEP_S, CAP_S] and targets[-1] == CAP_S


def test_the_page_policy_ignores_a_rare_short_freeze_and_steps_down_after_a_calm_spell():
    policy = PagePlayoutPolicy()
    assert policy.update(1.0, 0.05) == 0.0  # 50 ms in 5 s: 1 %, below the bar
    for t in (2.0, 3.0, 4.0, 5.0):  # the last freeze ends at 5 s
        policy.update(t, 0.1)
    raised, t = policy.target_s, 5.0
    assert raised > 0
    while policy.target_s >= raised:
        t += POLICY_INTERVAL_S
        raised = max(raised, policy.target_s)
        policy.update(t, 0.0)
    assert t >= 5.0 + CALM_S  # calm for CALM_S first
    assert policy.target_s == round(raised - STEP_S, 6)  # one step at a time
    for _ in range(int(3 * CALM_S)):
        t += POLICY_INTERVAL_S
        policy.update(t, 0.0)
    assert policy.target_s == 0.0  # back to the browser's own target


def test_online_freeze_detection_agrees_with_the_offline_one():
    rng = random.Random(3)
    times, t = [], 0.0
    for _ in range(400):
        t += rng.choice([FRAME_S] * 20 + [0.25, 0.5])
        times.append(t)
    detector = FreezeDetector()
    online = [i for i in (detector.add(x) for x in times) if i is not None]
    assert online == detect_freezes(times).durations_s and len(online) > 5


def test_the_command_line_takes_auto_or_a_browser_accepted_target():
    import argparse

    import pytest

    from loadtest.__main__ import jitter_buffer_target

    assert jitter_buffer_target("auto") == "auto" and jitter_buffer_target("450") == "450"
    for bad in ("x", "-1", "4001"):
        with pytest.raises(argparse.ArgumentTypeError):
            jitter_buffer_target(bad)
