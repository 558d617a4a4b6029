"""Taps on a live published track: encoded frames for recording, decoded frames
for processors; neither may slow forwarding, and a failing one is isolated."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from media.taps import DecodedFrameTap, EncodedFrameTap

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds


async def call(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    return patient, doctor, sfu.services.rooms.live["r1"].media


async def test_encoded_frames_as_received_start_on_a_keyframe(sfu):
    patient, doctor, room = await call(sfu)
    frames = []

    async def consume(item) -> None:
        frames.append(item)

    track = room.peers[patient.id].published["video"]
    tap = EncodedFrameTap(consume, request_keyframe=track.request_keyframe)
    room.add_tap(patient.id, "video", tap)
    await asyncio.sleep(1.5)
    room.remove_tap(patient.id, "video", tap)

    assert len(frames) >= 25, len(frames)  # ~30 fps for 1.5 s, starting at the requested keyframe
    assert frames[0].frame.keyframe and frames[0].codec.name == "VP8"
    stamps = [f.frame.rtp_timestamp for f in frames]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_decoded_frames_at_the_requested_rate_and_size(sfu):
    patient, doctor, room = await call(sfu)
    got: list[tuple[tuple, float, str]] = []
    track = room.peers[patient.id].published["video"]
    tap = DecodedFrameTap(request_keyframe=track.request_keyframe, fps=5, size=(160, 120))
    tap.add_consumer(lambda image, t: got.append((image.shape, t, threading.current_thread().name)))
    room.add_tap(patient.id, "video", tap)
    await asyncio.sleep(3.0)
    room.remove_tap(patient.id, "video", tap)

    assert 10 <= len(got) <= 16, len(got)  # 5 fps over ~3 s (minus the wait for a keyframe)
    assert all(shape == (120, 160, 3) for shape, _, _ in got)
    assert all(name != threading.main_thread().name for _, _, name in got)  # off the event loop
    assert tap.frames_decoded > len(got)  # every frame decoded, only 5/s handed on


async def test_slow_and_failing_consumers_do_not_touch_forwarding(sfu):
    patient, doctor, room = await call(sfu)
    track = room.peers[patient.id].published["video"]
    decoded = DecodedFrameTap(request_keyframe=track.request_keyframe, fps=30)
    decoded.add_consumer(lambda image, t: time.sleep(0.5))  # a very slow processor

    async def broken(item) -> None:
        raise RuntimeError("recorder disk gone")

    encoded = EncodedFrameTap(broken, request_keyframe=track.request_keyframe)
    room.add_tap(patient.id, "video", decoded)
    room.add_tap(patient.id, "video", encoded)

    seconds = await doctor.wait_for_frames(patient.id, "video", 45, timeout=5)
    assert seconds < 2.5, f"forwarding slowed down to {45 / seconds:.0f} fps"
    assert encoded.closed and isinstance(encoded.failed, RuntimeError)
    assert decoded.frames_skipped > 0  # the slow consumer made the decoder drop, not queue
    room.remove_tap(patient.id, "video", decoded)


async def test_a_tap_requested_before_the_track_exists_attaches_when_it_starts(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    room = sfu.services.rooms.live["r1"].media
    frames = []

    async def consume(item) -> None:
        frames.append(item)

    patient = sfu.participant("patient", seed=1)
    await patient.join()
    tap = EncodedFrameTap(consume, request_keyframe=lambda: None)
    room.add_tap(patient.id, "video", tap)
    await doctor.wait_for_frames(patient.id, "video", 20)
    assert frames and frames[0].frame.keyframe
    await patient.close()
    await asyncio.sleep(0.2)
    assert tap.closed  # the participant left: its taps end with it
