"""Bounded frame assembly on real VP8 packets with seeded loss and reordering."""

from __future__ import annotations

import fractions
import random

import numpy as np
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from media.frame_assembler import FrameAssembler

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
FRAME_S = 1 / 30


def packetised_clip(frames: int = 60,
                    keyframes_at: tuple[int, ...] = (0, 30)) -> list[tuple[int, int, int, bytes, int]]:
    """(seq, timestamp, marker, payload, frame index) for a real VP8 clip."""
    encoder = get_encoder(VP8)
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out, seq = [], 65500  # wraps during the clip
    for i in range(frames):
        frame = VideoFrame.from_ndarray(np.roll(base, i * 3, axis=1), format="bgr24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, ts = encoder.encode(frame, force_keyframe=i in keyframes_at)
        for j, payload in enumerate(payloads):
            out.append((seq % 65536, ts, int(j == len(payloads) - 1), payload, i))
            seq += 1
    return out


def frame_times(clip) -> dict[int, float]:
    return {index: index * FRAME_S for *_, index in clip}


def run(assembler, arrivals):
    """arrivals: (time, seq, ts, marker, payload); also polls every 10 ms like a timer would."""
    emitted = []
    arrivals = sorted(arrivals, key=lambda a: a[0])
    end = arrivals[-1][0] + 1.0
    t, i = 0.0, 0
    while t <= end:
        while i < len(arrivals) and arrivals[i][0] <= t:
            _, seq, ts, marker, payload = arrivals[i]
            emitted += assembler.add(seq, ts, marker, payload, now=t)
            i += 1
        emitted += assembler.poll(now=t)
        t = round(t + 0.01, 6)
    return emitted


def test_clean_stream_gives_every_frame_in_order():
    clip = packetised_clip()
    times = frame_times(clip)
    emitted = run(FrameAssembler("VP8"), [(times[idx], s, ts, m, p) for s, ts, m, p, idx in clip])
    assert len(emitted) == 60
    assert emitted[0].keyframe and emitted[30].keyframe
    assert all(not f.keyframe for k, f in enumerate(emitted) if k not in (0, 30))
    assert b"".join(emitted[5].payloads) == b"".join(p for s, ts, m, p, idx in clip if idx == 5)


def test_a_retransmission_inside_the_wait_completes_the_frame():
    clip = packetised_clip()
    times = frame_times(clip)
    arrivals = []
    for s, ts, m, p, idx in clip:
        late = 0.15 if idx == 10 and m else 0.0  # the last packet of frame 10 comes back after a NACK
        arrivals.append((times[idx] + late, s, ts, m, p))
    requests = []
    assembler = FrameAssembler("VP8", max_wait_s=0.3, on_keyframe_needed=lambda: requests.append(1))
    emitted = run(assembler, arrivals)
    assert len(emitted) == 60 and requests == []


def test_a_lost_packet_costs_at_most_the_wait_then_resyncs_on_a_keyframe():
    clip = packetised_clip()
    times = frame_times(clip)
    lost = next(s for s, ts, m, p, idx in clip if idx == 10)
    requests: list[float] = []
    assembler = FrameAssembler("VP8", max_wait_s=0.3, on_keyframe_needed=lambda: requests.append(1))
    arrivals = [(times[idx], s, ts, m, p) for s, ts, m, p, idx in clip if s != lost]
    emitted = run(assembler, arrivals)
    emitted_ts = [f.rtp_timestamp for f in emitted]
    assert requests == [1]  # asked once, not per frame
    # frames 0-9 come out, 10-29 are undecodable, 30 (keyframe) on come out again
    assert len(emitted) == 10 + 30 and emitted[10].keyframe
    assert sorted(emitted_ts[:10]) == emitted_ts[:10]
    # nothing waited longer than the bound: frame 30 came out as soon as it was complete
    assert emitted[10].completed_at - 30 * FRAME_S < 0.02


def test_seeded_reordering_without_loss_loses_nothing():
    clip = packetised_clip()
    times = frame_times(clip)
    rng = random.Random(11)
    arrivals = [(times[idx] + rng.uniform(0, 0.04), s, ts, m, p) for s, ts, m, p, idx in clip]
    emitted = run(FrameAssembler("VP8", max_wait_s=0.3), arrivals)
    assert len(emitted) == 60


def test_seeded_heavy_loss_never_stalls_longer_than_the_bound():
    clip = packetised_clip(frames=90, keyframes_at=(0, 30, 60))
    times = frame_times(clip)
    rng = random.Random(30)
    arrivals = [(times[idx], s, ts, m, p) for s, ts, m, p, idx in clip if rng.random() > 0.05]
    assembler = FrameAssembler("VP8", max_wait_s=0.3)
    emitted = run(assembler, arrivals)
    assert emitted, "keyframes that arrived whole must come out"
    gaps = [b.completed_at - a.completed_at for a, b in zip(emitted, emitted[1:])]
    # a gap longer than the bound is only ever the wait for the next keyframe, never a stall on old packets
    for a, b in zip(emitted, emitted[1:]):
        if b.completed_at - a.completed_at > 0.3 + 0.05:
            assert b.keyframe
    assert assembler.frames_dropped > 0 and max(gaps) < 1.5


def test_a_paused_stream_is_idle_not_lost():
    clip = packetised_clip(frames=30, keyframes_at=(0,))
    times = frame_times(clip)
    requests = []
    assembler = FrameAssembler("VP8", max_wait_s=0.3, on_keyframe_needed=lambda: requests.append(1))
    # frames 0-14, then two seconds of nothing (camera off), then 15-29
    arrivals = [(times[idx] + (2.0 if idx >= 15 else 0.0), s, ts, m, p) for s, ts, m, p, idx in clip]
    emitted = run(assembler, arrivals)
    assert len(emitted) == 30 and requests == [] and assembler.frames_dropped == 0
