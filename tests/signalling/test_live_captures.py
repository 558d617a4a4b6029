"""signalling/live_captures.py on its own: RoomCaptures on a stand-in call
(tests/signalling/call_room.py), storing into real capture records. The face-analysis
processor that runs the protocol is stood in for by the commands it would get; with the real
one: tests/media/processors/test_face_processor.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from media.processors.face_processor import DEFAULT_PROTOCOL
from recorder.keys import KeyStore
from recorder.manifest import room_label
from recorder.reader import RecordingReader
from signalling.live_captures import RoomCaptures
from signalling.registry import RoomRecord

from .call_room import CallRoom

JPEG = b"\xff\xd8\xff\xe0 a still \xff\xd9"


class FaceAnalysis:
    """The room's face-analysis processors as the captures see them: commands in, how many got each."""

    def __init__(self, running: int) -> None:
        self.running = running
        self.commands: list[dict] = []
        self.failures: list[tuple[str, str, str]] = []

    def __call__(self, command: dict) -> int:
        self.commands.append(command)
        return self.running


@pytest.fixture
def call() -> CallRoom:
    return CallRoom(RoomRecord(id="r1", name="Room", created_at=time.time(), instance="i1"))


def captures_for(room: CallRoom, data_dir, analysis: FaceAnalysis) -> RoomCaptures:
    return RoomCaptures(room, data_dir, label=room_label(room.record.id, room.record.instance), face_analysis=analysis,
                        on_failure=lambda *failure: analysis.failures.append(failure))


async def completed(room: CallRoom) -> dict:
    for _ in range(200):
        if "capture.completed" in room.types():
            return dict(room.events)["capture.completed"]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no capture.completed: {room.types()}")


async def test_the_stills_kept_go_into_the_capture_until_the_protocol_is_done(call, tmp_path):
    analysis = FaceAnalysis(running=1)
    captures = captures_for(call, tmp_path, analysis)
    doctor, patient = call.join("doctor"), call.join("patient")
    capture_id = await captures.start(doctor, None, 8.0)
    assert analysis.commands == [{"capture": list(DEFAULT_PROTOCOL), "tolerance_deg": 8.0}]  # omitted: the standard
    assert await captures.start(doctor, ["frontal"], 5.0) == capture_id  # the same record, a new protocol

    captures.keep("face-analysis", patient.id, "still", JPEG, {"pose": "frontal"})
    captures.keep("face-analysis", patient.id, "preview", b"not kept", {})
    captures.analysis_event({"kind": "capture", "state": "started"})
    captures.analysis_event({"kind": "guidance", "state": "done"})
    assert captures.capture is not None  # still running
    captures.analysis_event({"kind": "capture", "state": "done"})
    assert await completed(call) == {"capture_id": capture_id, "stills": 1}
    assert captures.capture is None and analysis.failures == []

    reader = RecordingReader.open(tmp_path, capture_id, KeyStore.open(tmp_path))
    assert reader.manifest.room == "r1@i1"
    assert [frame.payload for frame in reader.frames("stills")] == [JPEG]
    (still,) = [e.data for e in reader.events() if e.data.get("type") == "still"]
    assert (still["index"], still["pose"], still["participant"]) == (0, "frontal", patient.id)


async def test_without_an_analysed_patient_the_protocol_ends_at_once_with_its_record(call, tmp_path):
    captures = captures_for(call, tmp_path, FaceAnalysis(running=0))
    with pytest.raises(LookupError):
        await captures.start(call.join("doctor"), None, 8.0)
    assert captures.capture is None
    assert call.types() == ["capture.completed"] and call.events[0][1]["stills"] == 0


async def test_a_stop_is_asked_of_the_protocol_and_a_patient_leaving_ends_it_for_everyone(call, tmp_path):
    analysis = FaceAnalysis(running=1)
    captures = captures_for(call, tmp_path, analysis)
    doctor, patient = call.join("doctor"), call.join("patient")
    await captures.patient_left(patient.id)  # nothing running: nothing to tell
    assert call.broadcasts == []

    await captures.start(doctor, None, 8.0)
    assert captures.stop() and analysis.commands[-1] == {"capture": None}
    assert captures.capture is not None  # closed by the protocol's `stopped` event, or ...
    call.leave(patient)
    await captures.patient_left(patient.id)  # ... when its patient went
    (stopped,) = call.broadcasts
    assert {k: stopped[k] for k in ("type", "processor", "participant", "kind", "state", "pose", "remaining")} == {
        "type": "analysis", "processor": "face-analysis", "participant": patient.id, "kind": "capture",
        "state": "stopped", "pose": None, "remaining": []}
    assert captures.capture is None and call.types() == ["capture.completed"]
    analysis.running = 0
    assert not captures.stop()  # nothing to stop
