"""Face analysis in a live call: the patient gets guidance, clinicians get metrics."""

from __future__ import annotations

import cv2
import matplotlib.cbook

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


async def test_a_room_without_processors_decodes_nothing(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    patient = await join_patient_with_face(sfu)
    await doctor.wait_for_frames(patient.id, "video", 20)
    assert sfu.services.rooms.live["r1"].media._taps == {}
    assert not any(m["type"] == "analysis" for m in doctor.messages)
