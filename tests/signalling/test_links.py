"""Join links as the security review found them: a link counts only for the room instance it
was minted for (room ids are used again), a kick or an admin revokes a link for good (also
across a restart), links minted without an identity are never taken for one another, and
identities and names are bounded.

Everything goes through the real server (the `sfu` fixture), its admin API and WebSocket,
with real signed tokens; joins that must succeed use the synthetic participants.
"""

from __future__ import annotations

import json
import stat

import aiohttp
import jwt

from signalling.app import build_services, create_app
from signalling.config import ServerConfig


async def api(sfu, method: str, path: str, **kwargs):
    headers = {"Authorization": f"Bearer {sfu.services.admin_key}"}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, sfu.base_url + path, headers=headers, **kwargs) as response:
            return response.status, await response.json()


async def link(sfu, room: str, **body) -> dict:
    status, minted = await api(sfu, "POST", f"/api/rooms/{room}/links", json=body)
    assert status == 201, minted
    return minted


async def refused_join(base_url: str, token: str) -> tuple[dict, int]:
    """The fatal error a join with `token` gets, and the socket's close code."""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(base_url.replace("http", "ws", 1) + "/ws") as ws:
            await ws.send_json({"type": "join", "v": 1, "token": token})
            message = json.loads((await ws.receive(timeout=10)).data)
            await ws.receive(timeout=10)  # the close frame
            return message, ws.close_code or 0


async def joins(sfu, token: str, **kwargs):
    """A synthetic participant that joins with `token` (raises if the join is refused), once it
    has answered the server's first offer (so a kick does not cut its answer short)."""
    p = sfu.participant(kwargs.pop("role", "patient"), publish=False, **kwargs)
    p.token = token
    await p.join()
    await p.wait_for(lambda m: m["type"] == "offer")  # listed once answered
    return p


# --- Row 1: a room id used again is a new consultation -------------------------------------------

async def test_links_of_an_earlier_instance_do_not_join_the_room_created_again(sfu):
    status, first = await api(sfu, "POST", "/api/rooms", json={"id": "chen-1", "name": "Mrs Chen"})
    assert status == 201
    old_patient = await link(sfu, "chen-1", role="patient", name="Mrs Chen", ttl_s=7 * 86400)
    # a link minted without the claim (before instances, or by a caller giving none) is placed by its time
    legacy = sfu.services.issuer.mint(room="chen-1", identity="legacy-1", name="Legacy", role="doctor", ttl_s=600)
    assert (await api(sfu, "DELETE", "/api/rooms/chen-1"))[0] == 200

    status, second = await api(sfu, "POST", "/api/rooms", json={"id": "chen-1", "name": "Mr Li"})
    assert status == 201
    for token in (old_patient["token"], legacy):
        error, code = await refused_join(sfu.base_url, token)
        assert (error["type"], error.get("code"), error.get("fatal")) == ("error", "stale_link", True), error
        assert "earlier consultation" in error["message"] and code >= 1000
    assert await sfu.services.registry.list_participants("chen-1") == []

    assert first["instance"] and second["instance"] != first["instance"]
    assert old_patient["instance"] == first["instance"]
    assert jwt.decode(old_patient["token"], options={"verify_signature": False})["inst"] == first["instance"]
    fresh = await link(sfu, "chen-1", role="patient", name="Mr Li")
    assert fresh["instance"] == second["instance"]
    joined = await (await joins(sfu, fresh["token"])).wait_for(lambda m: m["type"] == "joined")
    assert joined["room"]["id"] == "chen-1"


async def test_a_closed_room_refuses_its_links_and_lists_its_instances(sfu):
    _, room = await api(sfu, "POST", "/api/rooms", json={"id": "wu-2"})
    patient = await link(sfu, "wu-2", role="patient")
    assert (await api(sfu, "DELETE", "/api/rooms/wu-2"))[0] == 200
    error, _ = await refused_join(sfu.base_url, patient["token"])
    assert error["code"] == "wrong_room"  # closing revokes every live link of the instance
    _, again = await api(sfu, "POST", "/api/rooms", json={"id": "wu-2"})
    status, listing = await api(sfu, "GET", "/api/rooms/wu-2/instances")
    assert status == 200 and [i["instance"] for i in listing["instances"]] == [room["instance"], again["instance"]]
    assert [i["open"] for i in listing["instances"]] == [False, True]
    assert (await api(sfu, "GET", "/api/rooms/nope/instances"))[0] == 404

    # trainers may get a link for the earlier instance; live roles only for the open one
    trainer = await link(sfu, "wu-2", role="trainer", instance=room["instance"])
    assert trainer["instance"] == room["instance"]
    earlier = {"role": "doctor", "instance": room["instance"]}
    status, body = await api(sfu, "POST", "/api/rooms/wu-2/links", json=earlier)
    assert status == 400 and body["error"] == "bad_request" and "trainer" in body["message"]
    status, body = await api(sfu, "POST", "/api/rooms/wu-2/links", json={"role": "trainer", "instance": "nope"})
    assert status == 404 and body["error"] == "not_found"
    status, body = await api(sfu, "POST", "/api/rooms/wu-2/links", json={"role": "trainer", "instance": 7})
    assert status == 400


# --- Row 2: kicking and revoking --------------------------------------------------------------

async def test_a_kicked_participant_cannot_rejoin_with_the_same_link(sfu):
    await sfu.room()
    minted = await link(sfu, "r1", role="expert", name="Dr Ko")
    expert = await joins(sfu, minted["token"], role="expert")
    status, body = await api(sfu, "DELETE", f"/api/rooms/r1/participants/{expert.id}")
    assert status == 200
    await expert.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "kicked")
    error, _ = await refused_join(sfu.base_url, minted["token"])
    assert (error["type"], error.get("code"), error.get("fatal")) == ("error", "link_revoked", True), error
    assert "revoked" in error["message"] and body["link_revoked"] is True
    await joins(sfu, (await link(sfu, "r1", role="expert", name="Dr Ko"))["token"], role="expert")  # a new link works


async def test_a_moderators_kick_revokes_too(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", publish=False)
    patient_link = sfu.token("patient", name="Mrs Chen")
    patient = await joins(sfu, patient_link)
    await doctor.send({"type": "kick", "participant_id": patient.id})
    await patient.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "kicked")
    error, _ = await refused_join(sfu.base_url, patient_link)
    assert (error["type"], error.get("code")) == ("error", "link_revoked"), error


async def test_an_unused_link_can_be_revoked_and_stays_revoked_after_a_restart(sfu, aiohttp_server):
    await sfu.room()
    minted = await link(sfu, "r1", role="patient")
    claims = jwt.decode(minted["token"], options={"verify_signature": False})
    assert minted["jti"] == claims["jti"] and minted["expires_at"] == claims["exp"]
    status, body = await api(sfu, "DELETE", f"/api/rooms/r1/links/{minted['jti']}")
    assert status == 200 and body["revoked"] == minted["jti"] and body["until"] >= claims["exp"]
    error, _ = await refused_join(sfu.base_url, minted["token"])
    assert error["code"] == "link_revoked"
    assert (await api(sfu, "DELETE", "/api/rooms/r1/links/not-a-jti"))[0] == 400
    assert (await api(sfu, "DELETE", f"/api/rooms/nope/links/{minted['jti']}"))[0] == 404

    data_dir = sfu.services.config.data_dir
    saved = data_dir / "revoked-links.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and minted["jti"] in json.loads(saved.read_text())
    # a restart: a new server on the same data directory still refuses the link
    config = ServerConfig(data_dir=data_dir, demo_room=False, default_processors=[])
    server = await aiohttp_server(create_app(build_services(config)))
    error, _ = await refused_join(str(server.make_url("")).rstrip("/"), minted["token"])
    assert error["code"] == "link_revoked"


async def test_revoking_a_link_in_use_removes_who_joined_with_it(sfu):
    await sfu.room()
    minted = await link(sfu, "r1", role="patient")
    patient = await joins(sfu, minted["token"])
    status, body = await api(sfu, "DELETE", f"/api/rooms/r1/links/{minted['jti']}")
    assert status == 200 and body["sessions_ended"] == 1
    await patient.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "kicked")
    assert (await refused_join(sfu.base_url, minted["token"]))[0]["code"] == "link_revoked"


# --- Row 3: links minted without an identity ------------------------------------------------------

async def test_links_minted_without_an_identity_are_never_the_same_person(sfu):
    await sfu.room()
    first = await link(sfu, "r1", role="expert")
    second = await link(sfu, "r1", role="expert")
    subs = {jwt.decode(m["token"], options={"verify_signature": False})["sub"] for m in (first, second)}
    assert len(subs) == 2 and all(s.startswith("expert-") for s in subs)
    assert subs == {first["identity"], second["identity"]}
    # two experts with the default name do not take each other's place in the call
    a = await joins(sfu, first["token"], role="expert")
    b = await joins(sfu, second["token"], role="expert")
    assert a.participant["name"] == b.participant["name"] == "Expert"
    await a.wait_for(lambda m: m["type"] == "participant-joined" and m["participant"]["id"] == b.id)
    assert a.closed_reason is None
    assert sorted(p.identity for p in await sfu.services.registry.list_participants("r1")) == sorted(subs)


# --- Row 11: bounded, printable identities and names ----------------------------------------------

async def test_identities_and_names_are_bounded_and_printable(sfu):
    await sfu.room()
    for body, field in (({"identity": "x" * 10_000}, "identity"), ({"name": "N" * 10_000}, "name"),
                        ({"identity": "x" * 129}, "identity"), ({"name": "N" * 65}, "name"),
                        ({"name": "Dr\nEvil"}, "name"), ({"identity": "a\x00b"}, "identity"),
                        ({"name": "   "}, "name"), ({"identity": ""}, "identity"), ({"name": 5}, "name")):
        status, error = await api(sfu, "POST", "/api/rooms/r1/links", json={"role": "doctor", **body})
        assert status == 400 and error["error"] == "bad_request" and field in error["message"], (body, error)
    name = "Dr Müller-Lüdenscheidt 李"
    minted = await link(sfu, "r1", role="doctor", identity="i" * 128, name=name + "n" * (64 - len(name)))
    doctor = await joins(sfu, minted["token"], role="doctor")
    assert doctor.participant["identity"] == "i" * 128 and len(doctor.participant["name"]) == 64

    # a link minted before the limits, with a 10 kB identity, is refused at the join
    secret = (sfu.services.config.data_dir / "token.secret").read_text().strip()
    claims = jwt.decode(minted["token"], options={"verify_signature": False}) | {"sub": "x" * 10_000}
    error, code = await refused_join(sfu.base_url, jwt.encode(claims, secret, algorithm="HS256"))
    assert (error["code"], code) == ("unauthorized", 4401)
