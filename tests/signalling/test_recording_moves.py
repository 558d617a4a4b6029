"""A recording whose call moves (its node drained, died, or lost the room) carries on as the
next part when the room's call starts again: the room's record notes what is recording and
the answers given; the next call records on at once, in a recording that names the one it
continues, asks again only those who had not answered, and still records no one in a
consent_required room who had not agreed. A recording stopped on purpose is not carried on.

Here the room's next call starts on the same server (`room_moved`, what a node that lost
its claim does; the rejoins make the call again); tests/signalling/test_two_nodes.py kills
a node and carries on on the other.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from recorder.audit import Action, AuditLog
from recorder.keys import KeyStore
from recorder.reader import RecordingReader
from recorder.store import RecordingStore
from signalling.live_recording import RECORDING_CARRIES_ON_WITHIN_S
from signalling.registry import RecordingNote

pytestmark = pytest.mark.slow


async def noted(sfu, predicate, timeout: float = 20.0):
    """The room's recording note once `predicate(note)` holds (it is written after the answer is told)."""
    deadline = time.monotonic() + timeout
    while True:
        note = (await sfu.services.registry.get_room("r1")).recording
        if predicate(note):
            return note
        assert time.monotonic() < deadline, f"the room's note is {note}"
        await asyncio.sleep(0.05)


async def test_a_moved_call_records_on_as_the_next_part_and_the_answers_hold(sfu):
    room = await sfu.services.registry.create_room("Room", "r1", consent_required=True)
    sfu.instances["r1"] = room.instance
    events: list[tuple[str, dict]] = []
    sfu.services.rooms.events.subscribe(lambda type, room_id, instance, data, event_id: events.append((type, data)))
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    expert = await sfu.join("expert", seed=3)
    await doctor.send({"type": "record", "action": "start"})
    on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    first = on["recording_id"]
    assert (on["part"], on["continues"]) == (1, None)
    await patient.send({"type": "consent", "recording_id": first, "given": True})  # the expert does not answer
    patient_first_id = patient.id
    note = await noted(sfu, lambda n: n is not None and n.answers)
    assert (note.recording_id, note.actor, note.by, note.part) == (first, "doctor-doctor", "Doctor", 1)
    assert note.answers == {"patient-patient": True}

    await sfu.services.rooms.room_moved("r1")  # the call ends here; the pages rejoin
    for page in (patient, doctor, expert):
        await page.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "moved")
        await page.close(leave=False)
    assert ("recording.stopped", {"recording_id": first, "reason": "moved"}) in events
    assert (await sfu.services.registry.get_room("r1")).recording == note  # not stopped on purpose: kept

    doctor = await sfu.join("doctor", seed=2)  # the first rejoin starts the call: it records on at once
    on = await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    second = on["recording_id"]
    assert second != first and (on["part"], on["continues"], on["by"]) == (2, first, "Doctor")
    patient = await sfu.join("patient", seed=1)
    told = await patient.wait_for(lambda m: m["type"] == "recording")
    assert (told["recording_id"], told["consent"]) == (second, True)  # their page does not ask again
    carried = await doctor.wait_for(lambda m: m["type"] == "consent" and m["participant"] == patient.id)
    assert (carried["recording_id"], carried["given"], carried["carried_from"]) == (second, True, first)
    expert = await sfu.join("expert", seed=3)
    told = await expert.wait_for(lambda m: m["type"] == "recording")
    assert told["recording_id"] == second and "consent" not in told  # never answered: asked now
    start = len(patient.messages)
    await patient.send({"type": "consent", "recording_id": second, "given": True})  # answered already
    assert (await patient.wait_for(lambda m: m["type"] == "error", start=start))["code"] == "bad_state"

    await doctor.wait_for_frames(patient.id, "video", 45, timeout=30)
    await expert.wait_for_frames(patient.id, "video", 10, timeout=30)
    await doctor.send({"type": "record", "action": "stop"})
    await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off")
    await noted(sfu, lambda n: n is None)  # stopped on purpose: the next call does not record on

    data_dir = sfu.services.config.data_dir
    listed = {info.id: info for info in RecordingStore(data_dir).list()}
    assert listed[first].state == listed[second].state == "closed"
    assert (listed[second].continues, listed[second].part) == (first, 2)
    reader = RecordingReader.open(data_dir, second, KeyStore.open(data_dir))
    assert (reader.manifest.continues, reader.manifest.part) == (first, 2)
    tracks = {t.track_id for t in reader.manifest.tracks}
    assert {f"{patient.id}-video", f"{doctor.id}-video"} <= tracks  # the patient agreed in part 1
    assert not any(track.startswith(expert.id) for track in tracks)  # the expert never did
    assert len(list(reader.frames(f"{patient.id}-video"))) >= 20
    assert any(e.data.get("type") == "consent" and e.data.get("carried_from") == first for e in reader.events())
    first_part = RecordingReader.open(data_dir, first, KeyStore.open(data_dir))
    answers = [e.data for e in first_part.events() if e.data.get("type") == "consent"]
    assert [(a["participant"], a["given"]) for a in answers] == [(patient_first_id, True)]  # once, as given

    started = [data for type, data in events if type == "recording.started"]
    assert started == [{"recording_id": first, "by": "doctor-doctor"},
                       {"recording_id": second, "by": "doctor-doctor", "continues": first, "part": 2}]
    audit = list(AuditLog.open(data_dir).authentic_entries())
    consents = [(e["actor"], e["target"], e["details"].get("carried_from")) for e in audit
                if e["action"] == Action.RECORD_CONSENT]
    assert consents == [("patient-patient", first, None), ("patient-patient", second, first)]
    start_entry = next(e for e in audit if e["action"] == Action.RECORD_START and e["target"] == second)
    assert (start_entry["details"]["continues"], start_entry["details"]["part"]) == (first, 2)


async def test_a_recording_whose_call_ends_is_not_carried_on(sfu):
    """The last one leaves (the consultation is over) or the room is closed: nothing to carry on."""
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    await doctor.send({"type": "record", "action": "start"})
    on = await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    await noted(sfu, lambda n: n is not None and n.recording_id == on["recording_id"])
    await doctor.close()
    await noted(sfu, lambda n: n is None)

    doctor = await sfu.join("doctor", seed=2)
    assert (await doctor.wait_for(lambda m: m["type"] == "recording"))["state"] == "off"


async def test_a_recording_noted_long_ago_is_not_carried_on_and_its_note_goes(sfu):
    """A call that comes back long after its node died (the same open room, the next day) is a
    new conversation: nobody is recorded until someone who may starts a recording."""
    room = await sfu.room()
    stale = RecordingNote("r1-old-recording", "doctor-doctor", "Doctor", 1, {"patient-patient": True},
                          noted_at=time.time() - RECORDING_CARRIES_ON_WITHIN_S - 60)
    assert await sfu.services.registry.note_recording("r1", room.instance, stale)
    patient = await sfu.join("patient", seed=1)
    assert (await patient.wait_for(lambda m: m["type"] == "recording"))["state"] == "off"
    await noted(sfu, lambda n: n is None)
    assert RecordingStore(sfu.services.config.data_dir).list() == []
