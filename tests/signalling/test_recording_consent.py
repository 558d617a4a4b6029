"""A participant's answer when told the consultation is recorded (`consent`, issue 17): in
the audit log under their identity, in the recording's events, told to the room; an answer
for a recording that is not the one running is refused and changes nothing."""

from __future__ import annotations

import pytest

from recorder.audit import Action, AuditLog

pytestmark = pytest.mark.slow


def consents(sfu) -> list[dict]:
    return [e for e in AuditLog.open(sfu.services.config.data_dir).authentic_entries()
            if e["action"] == Action.RECORD_CONSENT]


async def test_an_answer_is_audited_recorded_and_told_to_the_room(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.send({"type": "record", "action": "start"})
    on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")

    start = len(doctor.messages)
    await patient.send({"type": "consent", "recording_id": on["recording_id"], "given": True})
    told = await doctor.wait_for(lambda m: m["type"] == "consent", start=start)
    assert (told["participant"], told["recording_id"], told["given"]) == (patient.id, on["recording_id"], True)
    [entry] = consents(sfu)
    assert entry["actor"] == patient.participant["identity"] and entry["target"] == on["recording_id"]
    assert entry["details"] == {"given": True, "participant": patient.id, "role": "patient"}

    # One answer per recording: repeating it cannot grow the audit log.
    start = len(patient.messages)
    for given in (False, True, False):
        await patient.send({"type": "consent", "recording_id": on["recording_id"], "given": given})
    errors = [await patient.wait_for(lambda m: m["type"] == "error", start=start + i) for i in range(3)]
    assert {e["code"] for e in errors} == {"bad_state"}
    assert [e["details"]["given"] for e in consents(sfu)] == [True]

    # A new recording asks again.
    await doctor.send({"type": "record", "action": "stop"})
    await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off")
    start = len(patient.messages)
    await doctor.send({"type": "record", "action": "start"})
    again = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on", start=start)
    await patient.send({"type": "consent", "recording_id": again["recording_id"], "given": False})
    await doctor.wait_for(lambda m: m["type"] == "consent" and m["given"] is False)
    assert [e["details"]["given"] for e in consents(sfu)] == [True, False]


async def test_an_answer_for_another_recording_is_refused_and_changes_nothing(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await patient.send({"type": "consent", "recording_id": "r-none", "given": True})
    error = await patient.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == "bad_state" and not error["fatal"]

    await doctor.send({"type": "record", "action": "start"})
    on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    start = len(patient.messages)
    await patient.send({"type": "consent", "recording_id": on["recording_id"] + "x", "given": True})
    assert (await patient.wait_for(lambda m: m["type"] == "error", start=start))["code"] == "bad_state"
    await patient.send({"type": "consent", "recording_id": on["recording_id"], "given": "yes"})
    assert (await patient.wait_for(lambda m: m["type"] == "error", start=start + 1))["code"] == "bad_message"
    assert consents(sfu) == []
    assert patient.closed_reason is None  # refused, not disconnected


async def test_in_a_room_that_requires_consent_no_one_is_recorded_before_agreeing(sfu):
    room = await sfu.services.registry.create_room("Room", "r1", consent_required=True)
    sfu.instances["r1"] = room.instance
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    expert = await sfu.join("expert", seed=3)
    await doctor.send({"type": "record", "action": "start"})
    on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    assert on["consent_required"] is True
    live = sfu.services.rooms.live["r1"]

    def recorded() -> set[str]:
        return set(live.recorder.recorded)

    assert recorded() == {doctor.id}  # who records agreed by starting it
    await expert.send({"type": "consent", "recording_id": on["recording_id"], "given": False})
    await patient.send({"type": "consent", "recording_id": on["recording_id"], "given": True})
    await doctor.wait_for(lambda m: m["type"] == "consent" and m["participant"] == patient.id)
    await doctor.wait_for(lambda m: m["type"] == "consent" and m["participant"] == expert.id)
    assert recorded() == {doctor.id, patient.id}  # the patient from their answer on; the expert never

    # the patient's page reconnects (a new participant id, the same person): recorded at once
    await patient.close(leave=False)
    again = await sfu.join("patient", seed=1)
    await doctor.wait_for(lambda m: m["type"] == "participant-joined" and m["participant"]["id"] == again.id)
    assert again.id in recorded()
    # a new recording asks again
    await doctor.send({"type": "record", "action": "stop"})
    await again.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off")
    start = len(again.messages)
    await doctor.send({"type": "record", "action": "start"})
    await again.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on", start=start)
    assert recorded() == {doctor.id}
