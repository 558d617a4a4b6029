"""signalling/live_recording.py on its own: a RoomRecorder on a stand-in call
(tests/signalling/call_room.py), a real registry and the real recorder. Through the whole
server: test_recording_consent.py, test_recording_moves.py and test_two_nodes.py."""

from __future__ import annotations

import time

import pytest

from annotate.board import AnnotationBoard
from media.ice import IceConfig
from media.room import MediaRoom
from recorder.audit import Action, AuditLog
from recorder.keys import KeyStore
from recorder.manifest import room_label
from recorder.reader import RecordingReader
from recorder.store import RecordingStore
from signalling.live_recording import RECORDING_CARRIES_ON_WITHIN_S, RoomRecorder
from signalling.registry import InMemoryRegistry, RecordingNote, RoomRecord
from signalling.room_events import participant_data

from .call_room import CallRoom

SCREEN_STROKE = {"kind": "freehand", "points": [[0.1, 0.1], [0.2, 0.1], [0.3, 0.2]]}


@pytest.fixture
def registry(tmp_path) -> InMemoryRegistry:
    return InMemoryRegistry(tmp_path / "rooms.json")


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def recorder_for(room: CallRoom, data_dir, registry, board: AnnotationBoard | None = None) -> RoomRecorder:
    """The recorder as LiveRoom makes it; the stand-in's broadcasts go into its recording too."""
    record = room.record
    media = MediaRoom(record.id, IceConfig(), room)  # (no peers here: taps wait for tracks that never start)
    recorder = RoomRecorder(room, record, label=room_label(record.id, record.instance), media=media,
                            board=board or AnnotationBoard(now_ms=room.session_ms), data_dir=data_dir,
                            registry=registry)
    room.into_recording = recorder.record_event
    return recorder


async def note_of(registry, room_id: str = "r1") -> RecordingNote | None:
    room = await registry.get_room(room_id)
    return room.recording


def consents(data_dir) -> list[tuple[str, str, dict]]:
    return [(e["actor"], e["target"], e["details"]) for e in AuditLog.open(data_dir).authentic_entries()
            if e["action"] == Action.RECORD_CONSENT]


async def test_a_recording_starts_with_the_board_and_everyone_and_its_note_goes_when_stopped(registry, data_dir):
    record = await registry.create_room("Room", "r1")
    room = CallRoom(record)
    doctor, patient = room.join("doctor"), room.join("patient")
    room.join("expert", permissions=["subscribe"])  # publishes nothing: nothing to record
    board = AnnotationBoard(now_ms=room.session_ms)
    board.apply(doctor.identity, {"op": "add", "shape": SCREEN_STROKE})
    recorder = recorder_for(room, data_dir, registry, board)
    assert recorder.state() == {"type": "recording", "state": "off"}

    recording = await recorder.start(doctor)
    assert await recorder.start("admin-api") is recording  # one at a time
    assert recorder.state() == {"type": "recording", "state": "on", "recording_id": recording.id, "by": "Doctor",
                                "consent_required": False, "part": 1, "continues": None}
    assert room.broadcasts[-1] == {**recorder.state(), "t_ms": room.broadcasts[-1]["t_ms"]}
    assert recorder.recorded == {doctor.id, patient.id}
    assert room.events == [("recording.started", {"recording_id": recording.id, "by": doctor.identity})]
    note = await note_of(registry)
    assert (note.recording_id, note.actor, note.by, note.part, note.answers) == (
        recording.id, doctor.identity, "Doctor", 1, {})

    assert await recorder.stop("stopped") == recording.id
    assert await recorder.stop("stopped") is None
    assert recorder.recording is None and recorder.recorded == frozenset()
    assert recorder.state() == {"type": "recording", "state": "off"}
    assert room.types()[1:] == ["recording.stopped", "recording.sealed"]
    assert room.events[1][1] == {"recording_id": recording.id, "reason": "stopped"}
    assert room.events[2][1] == {"recording_id": recording.id, "failure": None}
    off = room.broadcasts[-1]
    assert (off["state"], off["recording_id"], off["reason"]) == ("off", recording.id, "stopped")
    assert await note_of(registry) is None  # stopped on purpose: the next call does not record on

    reader = RecordingReader.open(data_dir, recording.id, KeyStore.open(data_dir))
    assert reader.manifest.room == f"r1@{record.instance}"
    kinds = [e.data["type"] for e in reader.events()]
    assert kinds[0] == "annotation-snapshot" and kinds.count("track-owner") == 2
    assert "recording" in kinds  # the pages were told, and so is a replay
    snapshot = next(e.data for e in reader.events() if e.data["type"] == "annotation-snapshot")
    assert len(snapshot["shapes"]) == 1


async def test_in_a_consent_required_room_only_who_agreed_is_recorded_and_each_answers_once(registry, data_dir):
    record = await registry.create_room("Room", "r1", consent_required=True)
    room = CallRoom(record)
    doctor, patient, expert = room.join("doctor"), room.join("patient"), room.join("expert")
    recorder = recorder_for(room, data_dir, registry)
    recording = await recorder.start(doctor)
    assert recorder.recorded == {doctor.id}  # who may record agreed by starting it
    assert recorder.state(patient)["consent_required"] is True and "consent" not in recorder.state(patient)

    assert await recorder.record_consent(expert, recording.id, False)
    assert await recorder.record_consent(patient, recording.id, True)
    assert recorder.recorded == {doctor.id, patient.id}  # the patient from their answer on; the expert never
    assert not await recorder.record_consent(patient, recording.id, False)  # one answer per recording
    assert not await recorder.record_consent(doctor, recording.id + "x", True)  # not the one running
    assert (recorder.state(patient)["consent"], recorder.state(expert)["consent"]) == (True, False)

    told = [m for m in room.broadcasts if m["type"] == "consent"]
    assert [(m["participant"], m["given"]) for m in told] == [(expert.id, False), (patient.id, True)]
    assert room.types()[1:] == ["consent.refused", "consent.given"]
    assert room.events[2][1] == {"recording_id": recording.id, "participant": participant_data(patient)}
    assert consents(data_dir) == [
        (expert.identity, recording.id, {"given": False, "participant": expert.id, "role": "expert"}),
        (patient.identity, recording.id, {"given": True, "participant": patient.id, "role": "patient"})]
    assert (await note_of(registry)).answers == {expert.identity: False, patient.identity: True}
    await recorder.stop()


async def test_a_call_that_moved_records_on_as_the_next_part_and_the_answers_hold(registry, data_dir):
    record = await registry.create_room("Room", "r1", consent_required=True)
    room = CallRoom(record)
    doctor, patient = room.join("doctor"), room.join("patient")
    recorder = recorder_for(room, data_dir, registry)
    first = await recorder.start(doctor)
    await recorder.record_consent(patient, first.id, True)
    await recorder.call_ended("moved")
    assert room.events[-2] == ("recording.stopped", {"recording_id": first.id, "reason": "moved"})
    note = await note_of(registry)
    assert (note.recording_id, note.answers) == (first.id, {patient.identity: True})  # kept: the call goes on

    # the room's next call (here, or on another node): it records on before anyone is back
    moved = CallRoom(await registry.get_room("r1"))
    recorder = recorder_for(moved, data_dir, registry)
    second = await recorder.carry_on()
    assert (second.part, second.continues) == (2, first.id)
    assert moved.events == [("recording.started", {"recording_id": second.id, "by": doctor.identity,
                                                   "continues": first.id, "part": 2})]
    assert recorder.state()["by"] == "Doctor"
    again = moved.join("patient")  # the same person, a new participant id
    expert = moved.join("expert")
    for participant in (again, expert):  # as RoomService.join does
        recorder.record_participant(participant)
        recorder.carry_answer(participant)
    assert recorder.recorded == {again.id}  # agreed in part 1; the expert never answered
    assert recorder.state(again)["consent"] is True and "consent" not in recorder.state(expert)
    carried = [m for m in moved.broadcasts if m["type"] == "consent"]
    assert [(m["participant"], m["given"], m["carried_from"]) for m in carried] == [(again.id, True, first.id)]
    assert moved.pages[again.id] == []  # told to the others: their own page has the answer in `recording`
    recorder.carry_answer(again)  # told once
    assert len([m for m in moved.broadcasts if m["type"] == "consent"]) == 1
    assert not await recorder.record_consent(again, second.id, False)  # answered already
    assert consents(data_dir)[-1] == (patient.identity, second.id, {"given": True, "carried_from": first.id})

    await recorder.call_ended("empty")  # the consultation is over: for good
    assert moved.events[-2] == ("recording.stopped", {"recording_id": second.id, "reason": "room-closed"})
    assert await note_of(registry) is None
    listed = {info.id: info for info in RecordingStore(data_dir).list()}
    assert (listed[second.id].continues, listed[second.id].part) == (first.id, 2)


async def test_nothing_or_an_old_note_is_not_carried_on_and_the_old_note_goes(registry, data_dir):
    record = await registry.create_room("Room", "r1")
    assert await recorder_for(CallRoom(record), data_dir, registry).carry_on() is None
    stale = RecordingNote("r1-old-recording", "doctor", "Doctor", 1, {"patient": True},
                          noted_at=time.time() - RECORDING_CARRIES_ON_WITHIN_S - 60)
    assert await registry.note_recording("r1", record.instance, stale)
    room = CallRoom(await registry.get_room("r1"))
    recorder = recorder_for(room, data_dir, registry)
    assert await recorder.carry_on() is None
    assert await note_of(registry) is None and room.events == []
    assert recorder.state() == {"type": "recording", "state": "off"}
    assert RecordingStore(data_dir).list() == []


async def test_without_a_registry_nothing_is_noted(data_dir):
    record = RoomRecord(id="r1", name="Room", created_at=time.time(), instance="i1")
    room = CallRoom(record)
    recorder = recorder_for(room, data_dir, None)
    recording = await recorder.start(room.join("doctor"))
    assert await recorder.stop() == recording.id and room.types() == [
        "recording.started", "recording.stopped", "recording.sealed"]
