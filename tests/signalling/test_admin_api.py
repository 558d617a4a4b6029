"""The REST admin API: auth, rooms, links, participants, kick, close."""

from __future__ import annotations

import aiohttp
import jwt


async def api(sfu, method: str, path: str, key: str | None = "valid", headers: dict | None = None, **kwargs):
    headers = dict(headers or {})
    if key == "valid":
        headers["Authorization"] = f"Bearer {sfu.services.admin_key}"
    elif key is not None:
        headers["Authorization"] = key
    async with aiohttp.ClientSession() as http:
        async with http.request(method, sfu.base_url + path, headers=headers, **kwargs) as response:
            return response.status, await response.json()


async def test_requires_the_admin_key(sfu):
    assert (await api(sfu, "GET", "/api/rooms", key=None))[0] == 401
    assert (await api(sfu, "GET", "/api/rooms", key="Bearer wrong"))[0] == 401
    assert (await api(sfu, "GET", "/api/rooms", key=sfu.services.admin_key))[0] == 401  # scheme missing
    status, body = await api(sfu, "GET", "/api/rooms")
    assert status == 200 and body == {"rooms": []}


async def test_room_lifecycle_and_links(sfu):
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "Mrs Chen, follow-up", "id": "chen-1"})
    assert status == 201 and room["id"] == "chen-1" and room["open"]
    assert (await api(sfu, "POST", "/api/rooms", json={"id": "chen-1"}))[0] == 409

    status, link = await api(sfu, "POST", "/api/rooms/chen-1/links", json={"role": "patient", "name": "Mrs Chen"})
    assert status == 201 and "/patient#token=" in link["url"]
    claims = jwt.decode(link["token"], options={"verify_signature": False})
    assert claims["room"] == "chen-1" and claims["role"] == "patient" and set(claims["perms"]) == {"publish", "subscribe"}

    status, link = await api(sfu, "POST", "/api/rooms/chen-1/links", json={"role": "doctor", "name": "Dr Wu"})
    assert "/console#token=" in link["url"]

    patient = sfu.participant("patient")
    patient.token = (await api(sfu, "POST", "/api/rooms/chen-1/links", json={"role": "patient"}))[1]["token"]
    await patient.join()
    status, listing = await api(sfu, "GET", "/api/rooms/chen-1/participants")
    assert [p["role"] for p in listing["participants"]] == ["patient"]

    status, kicked = await api(sfu, "DELETE", f"/api/rooms/chen-1/participants/{patient.id}")
    assert status == 200
    await patient.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "kicked")
    assert (await api(sfu, "DELETE", "/api/rooms/chen-1/participants/p-nobody"))[0] == 404

    assert (await api(sfu, "DELETE", "/api/rooms/chen-1"))[0] == 200
    assert (await api(sfu, "GET", "/api/rooms/chen-1"))[0] == 404
    assert (await api(sfu, "POST", "/api/rooms/chen-1/links", json={"role": "patient"}))[0] == 404


async def test_closing_a_room_ends_its_sessions(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 3)
    assert (await api(sfu, "DELETE", "/api/rooms/r1"))[0] == 200
    for p in (patient, doctor):
        await p.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "room-closed")
    assert sfu.services.rooms.live == {}


async def test_rejects_bad_requests(sfu):
    await sfu.room()
    assert (await api(sfu, "POST", "/api/rooms", data=b"{nope", headers={"Content-Type": "application/json"}))[0] == 400
    assert (await api(sfu, "POST", "/api/rooms", json={"id": "bad id!"}))[0] == 409
    assert (await api(sfu, "POST", "/api/rooms", json={"max_participants": 500}))[0] == 400
    assert (await api(sfu, "POST", "/api/rooms/r1/links", json={"role": "admin"}))[0] == 400
    assert (await api(sfu, "POST", "/api/rooms/r1/links", json={"role": "patient", "ttl_s": 10**9}))[0] == 400
    assert (await api(sfu, "POST", "/api/rooms/r1/links", json={"role": "patient", "permissions": ["root"]}))[0] == 400
    status, _ = await api(sfu, "POST", "/api/rooms", data=b"x" * 100_000)
    assert status == 413


async def test_info_is_public(sfu):
    status, info = await api(sfu, "GET", "/api/info", key=None)
    assert status == 200 and info["protocol_versions"] == [1]
