"""The processor host on a live call: one decode per track, a worker per
processor, events routed by role, slow and crashing processors isolated."""

from __future__ import annotations

import time

import numpy as np
import pytest

from media.processing import DecodedInput, ProcessorHost

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds


class MeanBrightness:
    """A real (if simple) processor: reports the patient's picture brightness to the doctor."""

    name = "brightness"
    wants = DecodedInput(role="patient", fps=10, size=(64, 48))

    def start(self, context) -> None:
        self.context = context
        self.shapes = set()

    def process(self, image: np.ndarray, timestamp: float) -> None:
        self.shapes.add(image.shape)
        self.context.emit({"mean": float(image.mean())}, to_roles={"doctor"})

    def close(self) -> None:
        pass


class Slow(MeanBrightness):
    name = "slow"
    wants = DecodedInput(role="patient", fps=30)

    def process(self, image, timestamp) -> None:
        time.sleep(0.4)
        self.context.emit({"slow": True})


class Crashing(MeanBrightness):
    name = "crashing"

    def process(self, image, timestamp) -> None:
        raise ValueError("model file unreadable")


async def test_processors_run_isolated_on_one_decode(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    room = sfu.services.rooms.live["r1"].media

    events: list[tuple[str, str, object, float]] = []
    failures: list[tuple[str, str, str]] = []
    host = ProcessorHost(
        room, {"brightness": MeanBrightness, "slow": Slow, "crashing": Crashing},
        sink=lambda name, pid, event: events.append((name, pid, event, time.monotonic())),
        on_failure=lambda name, pid, error: failures.append((name, pid, error)),
    )
    host.participant_joined(doctor.id, "doctor")  # nobody wants the doctor's video: nothing started
    host.participant_joined(patient.id, "patient")
    assert host.runners(doctor.id) == []
    assert len(room._taps[(patient.id, "video")]) == 1  # three processors, one decoder

    seconds = await doctor.wait_for_frames(patient.id, "video", 60, timeout=6)
    runners = {r.processor.name: r for r in host.runners(patient.id)}
    await host.participant_left(patient.id)

    brightness = [e for name, pid, e, _ in events if name == "brightness"]
    assert len(brightness) >= 10 and all(e.to_roles == {"doctor"} for e in brightness)
    assert all(0 < e.data["mean"] < 255 for e in brightness)
    assert runners["brightness"].processor.shapes == {(48, 64, 3)}
    # the slow one got fewer frames and skipped the rest; the fast one was not held back
    assert runners["slow"].frames_processed < runners["brightness"].frames_processed
    assert runners["slow"].frames_skipped > 0
    assert failures and failures[0][0] == "crashing" and "model file unreadable" in failures[0][2]
    assert seconds < 3.0, "forwarding slowed while processors ran"
    assert (patient.id, "video") not in room._taps or room._taps[(patient.id, "video")] == []
