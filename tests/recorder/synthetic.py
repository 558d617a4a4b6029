"""A deterministic synthetic consultation: encoded-frame sizes and cadence as the SFU sees them.

Per participant a VP8 video track (30 fps, ~1.5 Mbit/s: keyframes of 40-70 KB every 2 s,
3-9 KB deltas) and an Opus track (20 ms frames of 60-160 bytes), plus join, annotation
and analysis events. Payloads are pseudo-random (incompressible, like encoded media) and
reproducible from (seed, track, frame number), so a reader's output can be compared
byte for byte, even with a recording written by another process.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union

from recorder.manifest import TrackInfo


@dataclass(frozen=True)
class SynthFrame:
    track_id: str
    timestamp_ms: int
    rtp_timestamp: int
    keyframe: bool
    payload: bytes


@dataclass(frozen=True)
class SynthEvent:
    timestamp_ms: int
    data: dict[str, Any]


Item = Union[SynthFrame, SynthEvent]
PARTICIPANTS = ("patient", "doctor")


def tracks(participants: tuple[str, ...] = PARTICIPANTS) -> list[TrackInfo]:
    out = []
    for p in participants:
        out += [TrackInfo(f"{p}-video", "video", "VP8", 90000), TrackInfo(f"{p}-audio", "audio", "opus", 48000)]
    return out


def payload(seed: int, track_id: str, n: int, size: int) -> bytes:
    return random.Random(f"{seed}/{track_id}/{n}").randbytes(size)


def _video(seed: int, track_id: str, offset_ms: int, duration_ms: int) -> Iterator[SynthFrame]:
    rng = random.Random(f"{seed}/{track_id}/sizes")
    rtp_base = rng.randrange(2**32)
    n = 0
    while (ts := offset_ms + n * 1000 // 30) < duration_ms:
        key = n % 60 == 0
        size = rng.randint(40_000, 70_000) if key else rng.randint(3_000, 9_000)
        yield SynthFrame(track_id, ts, (rtp_base + ts * 90) % 2**32, key, payload(seed, track_id, n, size))
        n += 1


def _audio(seed: int, track_id: str, offset_ms: int, duration_ms: int) -> Iterator[SynthFrame]:
    rng = random.Random(f"{seed}/{track_id}/sizes")
    rtp_base = rng.randrange(2**32)
    n = 0
    while (ts := offset_ms + n * 20) < duration_ms:
        yield SynthFrame(track_id, ts, (rtp_base + n * 960) % 2**32, False,
                         payload(seed, track_id, n, rng.randint(60, 160)))
        n += 1


def _events(seed: int, participants: tuple[str, ...], duration_ms: int) -> Iterator[SynthEvent]:
    # Lazy and independent of duration_ms: any prefix of a long session equals a short session.
    for t in range(0, duration_ms, 500):
        rng = random.Random(f"{seed}/events/{t}")
        if t // 500 < len(participants):
            p = participants[t // 500]
            yield SynthEvent(t, {"type": "join", "participant": p, "role": p})
        if t % 3000 == 1500:
            yield SynthEvent(t, {"type": "annotation", "by": "doctor", "shape": "circle", "x": round(rng.random(), 4),
                                 "y": round(rng.random(), 4), "note": "lesion ø 4 mm"})
        if t % 1000 == 0 and t:
            yield SynthEvent(t, {"type": "analysis", "landmarks": [round(rng.random(), 4) for _ in range(24)]})


def session(duration_ms: int, participants: tuple[str, ...] = PARTICIPANTS, seed: int = 0) -> Iterator[Item]:
    """Every frame and event of the session, in timestamp order."""
    streams: list[Iterator[Item]] = [_events(seed, participants, duration_ms)]
    for i, p in enumerate(participants):
        streams.append(_video(seed, f"{p}-video", 3 + 11 * i, duration_ms))
        streams.append(_audio(seed, f"{p}-audio", 7 * i, duration_ms))
    return heapq.merge(*streams, key=lambda item: item.timestamp_ms)


def write(writer, items) -> int:
    """Feed items to a RecordingWriter; returns how many."""
    n = 0
    for item in items:
        if isinstance(item, SynthFrame):
            writer.write_frame(item.track_id, item.timestamp_ms, item.rtp_timestamp, item.keyframe, item.payload)
        else:
            writer.write_event(item.timestamp_ms, item.data)
        n += 1
    return n
