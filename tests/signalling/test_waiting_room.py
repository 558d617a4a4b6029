"""The patient's side of the waiting room (issue 17, items 9 and 10), through the real server:
the room's doctor name and contact line reach the page; a patient who waits alone is
announced to the clinic (`participant.waiting`) and told so only once a real webhook
receiver took that event; a refused join says how to reach the clinic, and names a room's
contact only to a genuine link for that room. The last tests take signalling/waiting_room.py on
its own, on a stand-in call (tests/signalling/call_room.py)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import jwt
import pytest

from signalling.config import ServerConfig
from signalling.registry import RoomRecord
from signalling.room_events import RoomEvents, participant_data
from signalling.waiting_room import WaitingRoom
from tests.conftest import running_sfu

from .call_room import CallRoom
from .test_links import api, link, refused_join

CONTACT = "Call 021-5555 0123 or reply to your SMS"
SERVER_CONTACT = "Front desk: 021-5555 0100"
QUIET_S = 1.5  # how long "nothing comes" is watched: several delivery attempts (retried every <= 0.5 s here)


@pytest.fixture
async def contact_sfu(aiohttp_server, tmp_path):
    """A server with a default contact line (--clinic-contact), no webhook."""
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[],
                          clinic_contact=SERVER_CONTACT)
    async with running_sfu(aiohttp_server, config) as sut:
        yield sut


@pytest.fixture
async def hooked_sfu(aiohttp_server, tmp_path, webhook_receiver):
    """A server that tells the test's receiver (tests/webhooks/receiver.py), retrying within a second."""
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[],
                          webhook_urls=(webhook_receiver.url,), webhook_secret=webhook_receiver.secret,
                          webhook_retry_max_s=0.5)
    async with running_sfu(aiohttp_server, config) as sut:
        yield sut


async def joined_as(sfu, room: str, role: str = "patient", identity: str = "mrn-0042"):
    """A participant in `room` through a link the admin API made; its `joined` in `.joined`."""
    p = sfu.participant(role, publish=False, room=room)
    p.token = (await link(sfu, room, role=role, identity=identity))["token"]
    p.joined = await p.join()
    return p


def notices(p) -> list[dict]:
    return [m for m in p.messages if m["type"] == "clinic-notified"]


# --- the room's texts ----------------------------------------------------------------------------

async def test_a_rooms_doctor_and_contact_reach_its_patient(contact_sfu):
    sfu = contact_sfu
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w1", "doctor_name": "李医生 Dr Lee",
                                                             "contact": CONTACT, "clinic": "Riverside"})
    assert status == 201 and (room["doctor_name"], room["contact"]) == ("李医生 Dr Lee", CONTACT), room
    status, listed = await api(sfu, "GET", "/api/rooms/w1")
    assert (listed["doctor_name"], listed["contact"]) == ("李医生 Dr Lee", CONTACT)
    joined = (await joined_as(sfu, "w1")).joined
    assert joined["room"]["doctor_name"] == "李医生 Dr Lee" and joined["room"]["contact"] == CONTACT

    # unset: no doctor's name (the page's general words), the server's contact line
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w2"})
    joined = (await joined_as(sfu, "w2")).joined
    assert joined["room"]["doctor_name"] is None and joined["room"]["contact"] == SERVER_CONTACT


@pytest.mark.parametrize("field, limit", [("doctor_name", 64), ("contact", 120)])
async def test_room_texts_are_bounded_and_printable(sfu, field, limit):
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "r", field: "x" * limit})
    assert status == 201 and room[field] == "x" * limit
    for bad in ("", "   ", "x" * (limit + 1), "a\nb", "\u202eevil", 7, ["x"]):
        status, body = await api(sfu, "POST", "/api/rooms", json={"name": "r", field: bad})
        assert status == 400 and field in body["message"], (bad, body)
    status, info = await api(sfu, "GET", "/api/info")
    assert info["clinic_contact"] is None  # no --clinic-contact: no line


# --- refusals say how to reach the clinic ---------------------------------------------------------

def expired_copy(sfu, token: str) -> str:
    """The same link, correctly signed, expired a minute ago (past the 5 s leeway)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 60
    secret = (sfu.services.config.data_dir / "token.secret").read_text().strip()
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_a_refused_genuine_link_gets_its_rooms_contact_and_anything_else_the_servers(contact_sfu):
    sfu = contact_sfu
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w3", "contact": CONTACT})
    minted = await link(sfu, "w3", role="patient")

    refusal, code = await refused_join(sfu.base_url, expired_copy(sfu, minted["token"]))
    assert (refusal["code"], refusal["contact"], code) == ("token_expired", CONTACT, 4401)

    revoked = await link(sfu, "w3", role="patient")
    assert (await api(sfu, "DELETE", f"/api/rooms/w3/links/{revoked['jti']}"))[0] == 200
    refusal, _ = await refused_join(sfu.base_url, revoked["token"])
    assert (refusal["code"], refusal["contact"]) == ("link_revoked", CONTACT)

    # forged (another secret), garbled, missing: the server's line and nothing of the room
    claims = jwt.decode(minted["token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-server-secret-but-32-bytes-long", algorithm="HS256")
    expired_forgery = jwt.encode({**claims, "exp": int(time.time()) - 60}, "another-secret-that-is-32-bytes-long",
                                 algorithm="HS256")
    for token in (forged, expired_forgery, "eyJhbGciOi.garbage.token", ""):
        refusal, _ = await refused_join(sfu.base_url, token)
        assert refusal["code"] == "unauthorized" and refusal["contact"] == SERVER_CONTACT, (token, refusal)
        assert "w3" not in refusal["message"] and CONTACT not in str(refusal)

    # the room closed: still its link, still its contact; the id used again: no longer
    assert (await api(sfu, "DELETE", "/api/rooms/w3"))[0] == 200
    refusal, _ = await refused_join(sfu.base_url, minted["token"])
    assert (refusal["code"], refusal["contact"]) == ("wrong_room", CONTACT)
    await api(sfu, "POST", "/api/rooms", json={"name": "again", "id": "w3", "contact": "another clinic"})
    refusal, _ = await refused_join(sfu.base_url, minted["token"])
    assert (refusal["code"], refusal["contact"]) == ("stale_link", SERVER_CONTACT)


async def test_a_room_without_contact_on_a_server_without_one_says_none(sfu):
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w4"})
    minted = await link(sfu, "w4", role="patient")
    refusal, _ = await refused_join(sfu.base_url, expired_copy(sfu, minted["token"]))
    assert refusal["code"] == "token_expired" and refusal["contact"] is None


# --- participant.waiting, and the patient told only once the clinic took it ----------------------

@pytest.mark.slow
async def test_the_patient_is_told_only_after_the_receiver_took_the_waiting_event(hooked_sfu, webhook_receiver):
    sfu, receiver = hooked_sfu, webhook_receiver
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w5"})
    receiver.mode, receiver.fail_status = "fail", 500
    patient = await joined_as(sfu, "w5")
    while receiver.attempts < 3:  # room.started (first in the queue) refused again and again
        await asyncio.sleep(0.05)
    await asyncio.sleep(QUIET_S)
    assert notices(patient) == [] and receiver.events == []

    receiver.mode = "ok"
    notice = await patient.wait_for(lambda m: m["type"] == "clinic-notified", timeout=10)
    waiting = [e for e in receiver.events if e["type"] == "participant.waiting"]
    assert len(waiting) == 1, receiver.types()  # taken before the patient was told
    assert waiting[0]["data"] == {"participant": {"id": patient.id, "identity": "mrn-0042", "role": "patient"}}
    assert isinstance(notice["t_ms"], int) and len(notices(patient)) == 1

    # Someone with the patient waits too (their own event, their own notice) ...
    companion = await joined_as(sfu, "w5", identity="mrn-0042-mother")
    await companion.wait_for(lambda m: m["type"] == "clinic-notified", timeout=10)
    # ... and the patient's page rejoins in the same wait (a network drop): told at once, right
    # after `joined` rather than after another delivery; the clinic is not paged again.
    again = await joined_as(sfu, "w5")
    await patient.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "replaced")
    await again.wait_for(lambda m: m["type"] == "offer")
    kinds = [m["type"] for m in again.messages]
    assert "clinic-notified" in kinds and kinds.index("clinic-notified") < kinds.index("offer"), kinds
    await receiver.wait_for(7)  # started; joined x 3; waiting x 2 (not for the rejoin); the replaced session left
    await asyncio.sleep(QUIET_S)
    assert receiver.types().count("participant.waiting") == 2, receiver.types()

    # a doctor ends the wait: nothing more for anyone, and a doctor never waits
    doctor = await joined_as(sfu, "w5", role="doctor", identity="dr-lee")
    await asyncio.sleep(QUIET_S)
    assert notices(doctor) == [] and receiver.types().count("participant.waiting") == 2
    assert len(notices(again)) == 1 and len(notices(companion)) == 1


@pytest.mark.slow
async def test_a_patient_who_finds_a_doctor_does_not_wait_and_one_the_doctor_reaches_first_is_not_told(
        hooked_sfu, webhook_receiver):
    sfu, receiver = hooked_sfu, webhook_receiver
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w6"})
    receiver.mode = "fail"
    patient = await joined_as(sfu, "w6")
    await joined_as(sfu, "w6", role="doctor", identity="dr-lee")
    receiver.mode = "ok"  # the waiting event is taken only now: the wait is over by then
    await receiver.wait_for(4)  # room.started, joined, waiting, the doctor joined
    second = await joined_as(sfu, "w6", identity="mrn-0043")  # a doctor is here: no wait
    await receiver.wait_for(5)
    await asyncio.sleep(QUIET_S)
    assert receiver.types() == ["room.started", "participant.joined", "participant.waiting",
                                "participant.joined", "participant.joined"]
    assert notices(patient) == [] and notices(second) == []


async def test_without_a_webhook_nobody_claims_the_clinic_was_told(sfu):
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w7"})
    patient = await joined_as(sfu, "w7")
    await patient.wait_for(lambda m: m["type"] == "offer")
    await asyncio.sleep(QUIET_S)
    assert notices(patient) == []


async def test_info_names_the_servers_contact_to_anyone(contact_sfu):
    async with aiohttp.ClientSession() as http:
        async with http.get(contact_sfu.base_url + "/api/info") as response:
            assert (await response.json())["clinic_contact"] == SERVER_CONTACT


async def test_a_patient_alone_whose_page_rejoins_is_in_the_room_the_doctor_then_joins(sfu):
    """A phone that changed networks rejoins before the server noticed its old socket: the new
    session replaces the old one, which was alone in the room, and the doctor meets the new one."""
    await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "w8"})
    first = await joined_as(sfu, "w8")
    again = await joined_as(sfu, "w8")
    await first.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "replaced")
    doctor = await joined_as(sfu, "w8", role="doctor", identity="dr-lee")
    assert [p["id"] for p in doctor.joined["participants"]] == [again.id]
    await again.wait_for(lambda m: m["type"] == "participant-joined" and m["participant"]["id"] == doctor.id)
    assert set(sfu.services.rooms.live["w8"].sessions) == {again.id, doctor.id}


# --- signalling/waiting_room.py on its own --------------------------------------------------------

class Clinic:
    """Stands in for the webhook sender's acknowledgements (webhooks.WebhookSender.acknowledged):
    a future per event id, which the test resolves when "the clinic took it"."""

    def __init__(self, events: RoomEvents) -> None:
        self.acks: dict[str, asyncio.Future[None]] = {}
        events.subscribe(lambda *event: None, acknowledger=self._ack)

    def _ack(self, event_id: str) -> asyncio.Future[None]:
        self.acks[event_id] = asyncio.get_running_loop().create_future()
        return self.acks[event_id]

    async def took_all(self) -> None:
        for ack in self.acks.values():
            if not ack.done():
                ack.set_result(None)
        await asyncio.sleep(0)  # the waiting room's done-callbacks run


def waiting_room(record: RoomRecord | None = None) -> tuple[CallRoom, WaitingRoom, Clinic]:
    events = RoomEvents()
    clinic = Clinic(events)
    room = CallRoom(record or RoomRecord(id="w", name="Room", created_at=time.time(), instance="i1"), events)
    return room, WaitingRoom(room, events.acknowledged), clinic


def told(room: CallRoom, participant) -> list[dict]:
    return [m for m in room.pages[participant.id] if m["type"] == "clinic-notified"]


async def test_a_patient_alone_waits_and_hears_only_once_the_clinic_took_it():
    room, waiting, clinic = waiting_room()
    patient = room.join("patient", identity="mrn-0042")
    waiting.arrived(patient)
    assert room.events == [("participant.waiting", {"participant": participant_data(patient)})]
    await asyncio.sleep(0)
    assert told(room, patient) == [] and waiting.clinic_notice_for(patient) is None

    await clinic.took_all()
    assert len(told(room, patient)) == 1 and isinstance(told(room, patient)[0]["t_ms"], int)

    # the phone rejoins in the same wait: not paged again, told at its join
    room.leave(patient)
    waiting.left(patient.id)
    again = room.join("patient", identity="mrn-0042")
    waiting.arrived(again)
    assert room.types() == ["participant.waiting"]
    assert waiting.clinic_notice_for(again)["type"] == "clinic-notified"


async def test_a_clinician_ends_the_wait_and_nobody_waits_for_one_who_is_here():
    room, waiting, clinic = waiting_room()
    patient = room.join("patient", identity="mrn-0042")
    waiting.arrived(patient)
    (ack,) = clinic.acks.values()
    doctor = room.join("doctor", identity="dr-lee")
    waiting.arrived(doctor)
    assert ack.cancelled()  # the page no longer shows the wait: nothing to tell it
    await asyncio.sleep(0)
    assert told(room, patient) == [] and waiting.clinic_notice_for(patient) is None

    companion = room.join("patient", identity="mrn-0042-mother")
    waiting.arrived(companion)  # a clinician is here: no wait
    assert room.types() == ["participant.waiting"] and waiting.clinician_present()

    # the doctor went: the next patient waits again, an expert is a clinician too
    room.leave(doctor)
    waiting.arrived(room.join("patient", identity="mrn-0043"))
    assert room.types() == ["participant.waiting"] * 2
    room.join("expert")
    assert waiting.clinician_present()


async def test_a_page_that_went_or_a_call_that_ended_is_told_nothing():
    room, waiting, clinic = waiting_room()
    gone, staying = room.join("patient", identity="mrn-1"), room.join("patient", identity="mrn-2")
    waiting.arrived(gone)
    waiting.arrived(staying)
    room.leave(gone)
    waiting.left(gone.id)
    gone_ack, staying_ack = clinic.acks.values()
    assert gone_ack.cancelled() and not staying_ack.done()  # nobody left to tell: no longer waited for

    staying_ack.set_result(None)  # the clinic takes it just as the call ends
    waiting.close()
    await asyncio.sleep(0)
    assert told(room, gone) == [] and told(room, staying) == []


async def test_without_a_webhook_the_page_is_never_told():
    record = RoomRecord(id="w", name="Room", created_at=time.time(), instance="i1")
    room = CallRoom(record)  # RoomEvents with no acknowledger: nobody can tell whether the clinic knows
    waiting = WaitingRoom(room, room.room_events.acknowledged)
    patient = room.join("patient")
    waiting.arrived(patient)
    await asyncio.sleep(0)
    assert room.types() == ["participant.waiting"] and told(room, patient) == []
    assert waiting.clinic_notice_for(patient) is None
