"""A consultation told to the clinic's systems: every room, participant, recording, capture
and consent event reaches a real receiver, signed, in order, naming no one by name."""

from __future__ import annotations

import pytest

from signalling.config import ServerConfig
from tests.conftest import running_sfu

pytestmark = pytest.mark.slow

PATIENT_NAME = "王芳 Wang Fang"


@pytest.fixture
async def hooked_sfu(aiohttp_server, tmp_path, webhook_receiver):
    receiver = webhook_receiver
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[],
                          webhook_urls=(receiver.url,), webhook_secret=receiver.secret)
    async with running_sfu(aiohttp_server, config) as sut:
        yield sut


async def test_a_consultation_is_told_event_by_event(hooked_sfu, webhook_receiver):
    sfu, receiver = hooked_sfu, webhook_receiver
    room = await sfu.room()
    patient = await sfu.join("patient", seed=1, name=PATIENT_NAME, identity="mrn-0042")
    doctor = await sfu.join("doctor", seed=2)
    await doctor.send({"type": "record", "action": "start"})
    on = await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    await patient.send({"type": "consent", "recording_id": on["recording_id"], "given": True})
    await doctor.wait_for(lambda m: m["type"] == "consent")
    await doctor.send({"type": "record", "action": "stop"})
    await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off")
    live = sfu.services.rooms.live["r1"]
    with pytest.raises(LookupError):  # nobody's video is analysed: the capture ends at once, with no photo
        await live.captures.start(doctor_record(live, doctor.id), None, 8.0)
    await patient.close()
    await doctor.close()

    events = await receiver.wait_for(12)
    assert [e["type"] for e in events] == [
        "room.started", "participant.joined", "participant.waiting", "participant.joined", "recording.started",
        "consent.given", "recording.stopped", "recording.sealed", "capture.completed", "participant.left",
        "participant.left", "room.ended"]
    assert {e["room"]["instance"] for e in events} == {room.instance} and {e["room"]["id"] for e in events} == {"r1"}
    assert len({e["id"] for e in events}) == 12
    joined = events[1]["data"]["participant"]
    assert joined == {"id": patient.id, "identity": "mrn-0042", "role": "patient"}
    assert events[2]["data"] == {"participant": joined}  # the patient waited: nobody was here for them
    by_type = {e["type"]: e["data"] for e in events}
    assert by_type["recording.started"]["recording_id"] == on["recording_id"]
    assert by_type["consent.given"] == {"recording_id": on["recording_id"], "participant": joined}
    assert by_type["recording.stopped"]["reason"] == "stopped"
    assert by_type["recording.sealed"] == {"recording_id": on["recording_id"], "failure": None}
    assert by_type["capture.completed"]["stills"] == 0
    assert events[9]["data"]["participant"]["id"] == patient.id and events[9]["data"]["reason"] == "left"
    assert by_type["room.ended"]["reason"] == "empty" and by_type["room.ended"]["duration_s"] >= 0
    assert receiver.bad_signatures == 0
    assert not any(PATIENT_NAME in str(e) or "Wang" in str(e) for e in events)  # identity, never the name


async def test_a_closed_room_ends_with_its_reason(hooked_sfu, webhook_receiver):
    sfu, receiver = hooked_sfu, webhook_receiver
    await sfu.room()
    await sfu.join("patient", seed=1)
    await sfu.join("doctor", seed=2)
    await receiver.wait_for(4)  # started, the patient joined and waited, the doctor joined
    assert await sfu.services.rooms.close_room("r1")
    events = await receiver.wait_for(7)
    assert [e["type"] for e in events[4:]] == ["participant.left", "participant.left", "room.ended"]
    assert {e["data"]["reason"] for e in events[4:]} == {"room-closed"}


def doctor_record(live, participant_id: str):
    return live.sessions[participant_id].joined_participant()
