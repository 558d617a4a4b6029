"""Recording a live call with real aiortc peers: consent, round trip, failures."""

from __future__ import annotations

import asyncio
import os

import pytest

from recorder.audit import AuditLog
from recorder.keys import KeyStore
from recorder.reader import RecordingReader
from recorder.store import RecordingStore

STROKE = {"kind": "arrow", "from": [0.2, 0.8], "to": [0.5, 0.6]}


@pytest.mark.slow
async def test_record_verify_read_back(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)

    await doctor.send({"type": "record", "action": "start"})
    on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    assert on["by"] == "Doctor"  # the patient is told who records
    await doctor.send({"type": "annotate", "op": "add", "shape": STROKE})
    await doctor.wait_for_frames(patient.id, "video", 45, timeout=10)
    expert = await sfu.join("expert", seed=3)  # joins mid-recording: told at once, and recorded
    assert (await expert.wait_for(lambda m: m["type"] == "recording"))["state"] == "on"
    await expert.wait_for_frames(patient.id, "video", 20)
    await doctor.send({"type": "record", "action": "stop"})
    off = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off" and "recording_id" in m)

    data_dir = sfu.services.config.data_dir
    store = RecordingStore(data_dir, keys=KeyStore.open(data_dir), audit=AuditLog.open(data_dir))
    report = store.verify(off["recording_id"], actor="test")
    assert report.complete, report
    reader = RecordingReader.open(data_dir, off["recording_id"], KeyStore.open(data_dir))
    tracks = {t.track_id: t for t in reader.manifest.tracks}
    patient_video = list(reader.frames(f"{patient.id}-video"))
    assert tracks[f"{patient.id}-video"].codec == "VP8"
    assert len(patient_video) >= 40 and patient_video[0].keyframe
    stamps = [f.timestamp_ms for f in patient_video]
    assert stamps == sorted(stamps)
    assert len(list(reader.frames(f"{patient.id}-audio"))) >= 50  # Opus, one frame per packet
    assert f"{expert.id}-video" in tracks  # the late joiner was recorded too
    events = [e.data for e in reader.events()]
    kinds = {e["type"] for e in events}
    assert {"annotation", "participant-joined", "track-owner", "recording"} <= kinds
    annotation = next(e for e in events if e["type"] == "annotation")
    assert annotation["shape"]["kind"] == "arrow"
    # no plaintext media on disk: the VP8 bitstream never appears in the files
    sample = patient_video[5].payload[:32]
    for name in os.listdir(data_dir / "recordings" / off["recording_id"]):
        assert sample not in (data_dir / "recordings" / off["recording_id"] / name).read_bytes()


async def test_only_the_record_permission_may_record(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    await patient.send({"type": "record", "action": "start"})
    error = await patient.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == "forbidden"
    assert sfu.services.rooms.live["r1"].recording is None


@pytest.mark.slow
async def test_storage_failure_stops_the_recording_not_the_call(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    await doctor.send({"type": "record", "action": "start"})
    await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    await asyncio.sleep(0.5)
    # the disk goes away under the writer: its files stop accepting writes (EBADF at the OS boundary)
    writer = sfu.services.rooms.live["r1"].recording.writer
    for track in writer._tracks.values():
        os.close(track.fd)
        track.fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    off = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off" and "recording_id" in m,
                                 timeout=10)
    assert off["reason"].startswith("error:") and "space" in off["reason"].lower()
    await doctor.wait_for_frames(patient.id, "video", 30, timeout=5)  # the call goes on


async def test_a_room_whose_storage_is_unusable_refuses_to_start(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    (sfu.services.config.data_dir / "recordings").write_text("not a directory")
    await doctor.send({"type": "record", "action": "start"})
    error = await doctor.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == "recording_failed"
    assert sfu.services.rooms.live["r1"].recording is None
