"""Recordings belong to the room instance they were made in: a trainer link of a later
consultation under the same room id does not list or open them; a trainer link minted
for the earlier instance does; trainers never see participants' identities.

A real server (the `sfu` fixture, replay API as signalling/app.py serves it), its admin
API, a doctor (synthetic participant) recording through the WebSocket, and real files.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest

from media.ice import IceConfig
from recorder.audit import Action, AuditLog
from recorder.keys import KeyStore
from recorder.manifest import Manifest, is_recording_id
from recorder.writer import RecordingWriter
from signalling.live_rooms import LiveRoom
from signalling.registry import ParticipantRecord

MRN = "MRN-0042"  # what clinics use as an identity: it must never reach a trainer


async def admin(sfu, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bearer {sfu.services.admin_key}"}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, sfu.base_url + path, headers=headers, **kwargs) as response:
            return response.status, await response.json()


async def replay(sfu, path: str, token: str):
    async with aiohttp.ClientSession() as http:
        async with http.get(sfu.base_url + path, headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, json.loads(await response.read())


async def trainer(sfu, room: str, **body) -> str:
    status, minted = await admin(sfu, "POST", f"/api/rooms/{room}/links", json={"role": "trainer", **body})
    assert status == 201, minted
    return minted["token"]


async def record_a_consultation(sfu, room: str) -> str:
    """A doctor (identity: a record number) joins, records a few seconds with a drawing; the id."""
    _, minted = await admin(sfu, "POST", f"/api/rooms/{room}/links",
                            json={"role": "doctor", "name": "Dr Wu", "identity": MRN})
    doctor = sfu.participant("doctor", room=room, seed=2)
    doctor.token = minted["token"]
    await doctor.join()
    await doctor.send({"type": "record", "action": "start"})
    on = await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    await doctor.send({"type": "annotate", "op": "add",
                       "shape": {"kind": "arrow", "from": [0.2, 0.8], "to": [0.5, 0.6]}})
    await doctor.wait_for(lambda m: m["type"] == "annotation")
    live = sfu.services.rooms.live[room]
    for _ in range(100):  # some media, so the recording has the doctor's file
        if live.recording is not None and live.recording.frames_queued >= 20:
            break
        await asyncio.sleep(0.05)
    await doctor.send({"type": "record", "action": "stop"})
    await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off")
    await doctor.close()
    return on["recording_id"]


def manifest_room(sfu, recording_id: str) -> str:
    return Manifest.load(sfu.services.config.data_dir / "recordings" / recording_id)[0].room


async def test_a_room_created_again_does_not_show_the_earlier_consultations_recordings(sfu):
    _, first = await admin(sfu, "POST", "/api/rooms", json={"id": "chen-1"})
    recording_id = await record_a_consultation(sfu, "chen-1")
    assert (await admin(sfu, "DELETE", "/api/rooms/chen-1"))[0] == 200
    _, second = await admin(sfu, "POST", "/api/rooms", json={"id": "chen-1"})

    # the new consultation's trainer (minted by the admin API, or without an instance claim: placed by its
    # time, once the second the room was created again in is over, as within it the link could be either's)
    while time.time() < int(second["created_at"]) + 1:
        await asyncio.sleep(0.05)
    for token in (await trainer(sfu, "chen-1"),
                  sfu.services.issuer.mint(room="chen-1", identity="t-2", name="T", role="trainer", ttl_s=600)):
        status, listing = await replay(sfu, "/api/replay/recordings", token)
        assert status == 200 and listing["recordings"] == []
        for path in (f"/api/replay/recordings/{recording_id}", f"/api/replay/recordings/{recording_id}/urls"):
            status, error = await replay(sfu, path, token)
            assert (status, error.get("error")) == (403, "wrong_room"), error
        assert listing["instance"] == second["instance"]
    assert manifest_room(sfu, recording_id) == f"chen-1@{first['instance']}"  # authenticated (MACed) with it

    # a trainer link made for the earlier instance sees it, without anyone's identity
    earlier = await trainer(sfu, "chen-1", instance=first["instance"])
    status, listing = await replay(sfu, "/api/replay/recordings", earlier)
    assert status == 200 and [r["id"] for r in listing["recordings"]] == [recording_id]
    status, rec = await replay(sfu, f"/api/replay/recordings/{recording_id}", earlier)
    assert status == 200 and rec["instance"] == first["instance"]
    assert MRN not in json.dumps(rec)
    (doctor,) = rec["participants"]
    assert doctor["name"] == "Dr Wu" and doctor["identity"] == "participant-1"
    arrow = next(i["event"] for i in rec["events"] if i["event"]["type"] == "annotation")
    assert arrow["author"] == arrow["shape"]["author"] == doctor["identity"]  # the page still names the author
    opened = [e for e in AuditLog.open(sfu.services.config.data_dir).authentic_entries()
              if e["action"] == Action.REPLAY and e["target"] == recording_id]
    assert len(opened) == 1 and opened[0]["actor"].startswith("trainer-")


async def test_two_default_trainer_links_are_two_viewers(sfu):
    await admin(sfu, "POST", "/api/rooms", json={"id": "r9"})
    recording_id = await record_a_consultation(sfu, "r9")
    subs = []
    for _ in range(2):
        status, rec = await replay(sfu, f"/api/replay/recordings/{recording_id}", await trainer(sfu, "r9"))
        assert status == 200 and rec["media"]
        subs.append(parse_qs(urlparse(rec["media"][0]["url"]).query)["sub"][0])
    # the signed media URLs (and so the replay job and watermark id) are each viewer's own
    assert subs[0] != subs[1] and all(s.startswith("trainer-") for s in subs)
    actors = [e["actor"] for e in AuditLog.open(sfu.services.config.data_dir).authentic_entries()
              if e["action"] == Action.REPLAY and e["target"] == recording_id]
    assert actors == subs


async def test_recordings_that_name_no_instance_belong_to_the_one_current_when_made(sfu):
    _, first = await admin(sfu, "POST", "/api/rooms", json={"id": "old"})
    await admin(sfu, "DELETE", "/api/rooms/old")
    _, second = await admin(sfu, "POST", "/api/rooms", json={"id": "old"})
    data_dir = sfu.services.config.data_dir
    writer = RecordingWriter.start(data_dir, KeyStore.open(data_dir, create=True), room="old",
                                   audit=AuditLog.open(data_dir, create=True), actor="doctor-1", fsync=False)
    writer.write_event(100, {"type": "track-owner", "participant": {"id": "p-1", "identity": MRN, "name": "P",
                                                                    "role": "patient"}})
    writer.close()
    status, listing = await replay(sfu, "/api/replay/recordings", await trainer(sfu, "old"))
    assert [r["id"] for r in listing["recordings"]] == [writer.id]
    earlier = await trainer(sfu, "old", instance=first["instance"])
    assert (await replay(sfu, "/api/replay/recordings", earlier))[1]["recordings"] == []
    status, error = await replay(sfu, f"/api/replay/recordings/{writer.id}", earlier)
    assert (status, error.get("error")) == (403, "wrong_room")
    assert second["instance"] != first["instance"]


async def test_photo_captures_carry_the_instance(sfu):
    room = await sfu.room()
    live = LiveRoom(room, IceConfig(), sfu.services.config.data_dir)
    doctor = ParticipantRecord(id="p-1", room_id="r1", identity="dr-wu", name="Dr Wu", role="doctor",
                               permissions=["record"], joined_at=0.0)
    try:
        with pytest.raises(LookupError):  # nobody's video is analysed: the capture ends at once, stored
            await live.captures.start(doctor, None, 8.0)
    finally:
        await live.close()
    (capture,) = [d for d in (sfu.services.config.data_dir / "recordings").iterdir() if is_recording_id(d.name)]
    assert manifest_room(sfu, capture.name) == f"r1@{room.instance}"


async def test_revoking_a_trainer_link_stops_its_signed_media_urls(sfu):
    """Media URLs name the link they were made for: once an admin revokes it, a URL handed
    out before no longer serves the replay (it used to, for the URL's remaining minutes)."""
    await admin(sfu, "POST", "/api/rooms", json={"id": "r8"})
    recording_id = await record_a_consultation(sfu, "r8")
    _, minted = await admin(sfu, "POST", "/api/rooms/r8/links", json={"role": "trainer"})
    status, rec = await replay(sfu, f"/api/replay/recordings/{recording_id}", minted["token"])
    assert status == 200 and rec["media"]
    status_url = rec["media"][0]["status_url"]
    assert parse_qs(urlparse(status_url).query)["lnk"] == [minted["jti"]]
    async with aiohttp.ClientSession() as http:
        async with http.get(sfu.base_url + status_url) as response:
            assert response.status == 200, await response.text()
        status, revoked = await admin(sfu, "DELETE", f"/api/rooms/r8/links/{minted['jti']}")
        assert status == 200, revoked
        async with http.get(sfu.base_url + status_url) as response:
            assert response.status == 401 and (await response.json())["error"] == "link_revoked"
