"""Face analysis in a live call: the patient gets guidance, clinicians get metrics."""

from __future__ import annotations

import asyncio

import cv2
import matplotlib.cbook
import pytest

from loadtest.participant import SyntheticParticipant
from loadtest.sources import PhotoVideoTrack, ToneAudioTrack


def face_photo():
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return cv2.imdecode(__import__("numpy").frombuffer(f.read(), "uint8"), cv2.IMREAD_COLOR)


async def join_patient_with_face(sfu) -> SyntheticParticipant:
    patient = SyntheticParticipant(sfu.base_url, sfu.token("patient"), audio=ToneAudioTrack(),
                                   video=PhotoVideoTrack(face_photo()))
    sfu.participants.append(patient)
    await patient.join()
    return patient


async def test_guidance_to_the_patient_and_metrics_to_the_clinicians(sfu):
    await sfu.room(processors=["face-analysis"])
    doctor = await sfu.join("doctor", seed=2)
    patient = await join_patient_with_face(sfu)

    metrics = await doctor.wait_for(lambda m: m["type"] == "analysis" and m.get("kind") == "face-metrics"
                                    and m["face"] is not None, timeout=20)
    assert metrics["participant"] == patient.id and metrics["processor"] == "face-analysis"
    assert len(metrics["face"]["landmarks"]) == 478
    assert abs(metrics["face"]["pose"]["roll"]) < 15  # the photo only tilts a few degrees
    guidance = await patient.wait_for(lambda m: m["type"] == "analysis" and m.get("kind") == "guidance", timeout=10)
    assert guidance["text"] and guidance["prompt"]
    # the patient gets prompts, never the clinicians' metrics and landmarks
    assert not any(m.get("kind") == "face-metrics" for m in patient.messages)


async def test_prompts_in_the_room_language(sfu):
    await sfu.room(processors=["face-analysis"], language="zh")
    patient = await join_patient_with_face(sfu)
    guidance = await patient.wait_for(lambda m: m["type"] == "analysis" and m.get("kind") == "guidance", timeout=20)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in guidance["text"]), guidance["text"]


@pytest.mark.slow
async def test_a_room_without_processors_decodes_nothing(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    patient = await join_patient_with_face(sfu)
    await doctor.wait_for_frames(patient.id, "video", 20)
    assert sfu.services.rooms.live["r1"].media._taps == {}
    assert not any(m["type"] == "analysis" for m in doctor.messages)


@pytest.mark.slow
async def test_guided_capture_keeps_the_frontal_still_encrypted(sfu):
    import numpy as np

    from recorder.keys import KeyStore
    from recorder.reader import RecordingReader, writer_alive

    await sfu.room(processors=["face-analysis"])
    doctor = await sfu.join("doctor", seed=2)
    patient = await join_patient_with_face(sfu)
    await doctor.wait_for(lambda m: m["type"] == "analysis" and m.get("kind") == "face-metrics"
                          and m["face"] is not None, timeout=20)

    await patient.send({"type": "capture", "action": "start"})
    assert (await patient.wait_for(lambda m: m["type"] == "error"))["code"] == "forbidden"

    await doctor.send({"type": "capture", "action": "start", "poses": ["frontal", "left45"], "tolerance_deg": 10})
    started = await patient.wait_for(lambda m: m.get("kind") == "capture" and m["state"] == "started")
    assert started["pose"] == "frontal" and started["remaining"] == ["frontal", "left45"]
    still = await doctor.wait_for(lambda m: m.get("kind") == "still", timeout=20)
    assert still["pose"] == "frontal" and still["thumbnail"].startswith("data:image/jpeg;base64,")
    assert (still["width"], still["height"]) == (640, 480)  # full resolution, not the analysis size
    observations = await doctor.wait_for(lambda m: m.get("kind") == "observations", timeout=10)
    report = observations["report"]
    assert report["kind"] == "skin-observations" and "not a diagnosis" in report["disclaimer"]
    assert {"forehead", "nose", "chin"} <= set(report["regions"])
    assert not any(m.get("kind") == "observations" for m in patient.messages)  # clinicians only
    following = await patient.wait_for(lambda m: m.get("kind") == "capture" and m["state"] == "next")
    assert following["pose"] == "left45"  # the photo cannot turn: the protocol waits here...
    await doctor.send({"type": "capture", "action": "stop"})  # ...until the doctor stops it
    await doctor.wait_for(lambda m: m.get("kind") == "capture" and m["state"] == "stopped")

    data_dir = sfu.services.config.data_dir
    recordings = sorted((data_dir / "recordings").iterdir())
    for _ in range(50):  # the capture session is closed right after the stop
        if not writer_alive(recordings[-1]):
            break
        await asyncio.sleep(0.1)
    reader = RecordingReader.open(data_dir, recordings[-1].name, KeyStore.open(data_dir))
    (frame,) = list(reader.frames("stills"))
    image = cv2.imdecode(np.frombuffer(frame.payload, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    events = [e.data for e in reader.events() if e.data.get("type") == "still"]
    assert events[0]["pose"] == "frontal" and events[0]["participant"] == patient.id
    assert events[0]["observations"]["kind"] == "skin-observations"  # kept with the still
    assert b"JFIF" not in (recordings[-1] / "track-1.seg").read_bytes()  # encrypted at rest


async def test_default_protocol_and_a_patient_leaving_mid_capture(sfu):
    await sfu.room(processors=["face-analysis"])
    doctor = await sfu.join("doctor", seed=2)
    patient = await join_patient_with_face(sfu)
    await doctor.wait_for(lambda m: m.get("kind") == "face-metrics", timeout=20)
    await doctor.send({"type": "capture", "action": "start"})  # no poses: the standard three
    started = await doctor.wait_for(lambda m: m.get("kind") == "capture" and m["state"] == "started")
    assert started["remaining"] == ["frontal", "left45", "right45"]
    await patient.close()
    await doctor.wait_for(lambda m: m.get("kind") == "capture" and m["state"] == "stopped")
    assert sfu.services.rooms.live["r1"].captures.capture is None  # the capture record was closed


async def test_a_late_console_gets_the_current_prompt(sfu):
    await sfu.room(processors=["face-analysis"])
    patient = await join_patient_with_face(sfu)
    prompt = await patient.wait_for(lambda m: m.get("kind") == "guidance", timeout=20)
    expert = await sfu.join("expert", seed=3)
    caught_up = await expert.wait_for(lambda m: m.get("kind") == "guidance", timeout=2)
    assert caught_up["participant"] == prompt["participant"] and caught_up["text"]
