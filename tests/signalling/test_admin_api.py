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
    assert claims["room"] == "chen-1" and claims["role"] == "patient"
    assert set(claims["perms"]) == {"publish", "subscribe"}

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


async def test_live_watermark_setting(sfu):
    status, room = await api(sfu, "POST", "/api/rooms", json={"id": "plain"})
    assert status == 201 and room["live_watermark"] == "off"  # the server's default
    for mode in ("off", "page", "server"):
        status, room = await api(sfu, "POST", "/api/rooms", json={"id": f"wm-{mode}", "live_watermark": mode})
        assert status == 201 and room["live_watermark"] == mode
        assert (await api(sfu, "GET", f"/api/rooms/wm-{mode}"))[1]["live_watermark"] == mode
    for bad in ("on", "Server", "", True, None, 1, ["server"]):
        status, body = await api(sfu, "POST", "/api/rooms", json={"id": "bad", "live_watermark": bad})
        assert status == 400 and body["error"] == "bad_request" and "live_watermark" in body["message"], bad
    assert (await api(sfu, "GET", "/api/rooms/bad"))[0] == 404

    sfu.services.config.default_live_watermark = "page"  # what run.py --live-watermark page sets
    assert (await api(sfu, "POST", "/api/rooms", json={"id": "by-default"}))[1]["live_watermark"] == "page"

    # every page is told, in `joined`, so it can show that (and how) the video is watermarked
    for mode in ("page", "server"):
        doctor = sfu.participant("doctor", room=f"wm-{mode}", publish=False)
        joined = await doctor.join()
        assert joined["room"]["live_watermark"] == mode


async def test_live_watermark_persists_with_the_room_list(tmp_path):
    from signalling.registry import InMemoryRegistry, RegistryError

    registry = InMemoryRegistry(tmp_path / "rooms.json")
    await registry.create_room("A", "a", live_watermark="server")
    await registry.create_room("B", "b")
    again = InMemoryRegistry(tmp_path / "rooms.json")
    assert (await again.get_room("a")).live_watermark == "server"
    assert (await again.get_room("b")).live_watermark == "off"
    try:
        await registry.create_room("C", "c", live_watermark="maybe")
    except RegistryError:
        pass
    else:
        raise AssertionError("an unknown live_watermark mode was accepted")


async def test_server_watermarked_room_issues_an_audited_id_or_refuses_the_join(sfu, monkeypatch):
    from recorder.watermark_store import open_registry

    await sfu.services.registry.create_room("Marked", "m1", live_watermark="server")
    doctor = sfu.participant("doctor", room="m1", publish=False, name="Dr Wu", identity="dr-wu")
    await doctor.join()
    issued = [w for w in open_registry(sfu.services.config.data_dir).entries() if w.viewer == "dr-wu"]
    assert [(w.purpose, w.recording_id, w.viewer_name) for w in issued] == [("live", "m1", "Dr Wu")]

    # without a usable watermark key nobody may watch unmarked: the join is refused
    monkeypatch.setenv("CONSULT_WATERMARK_KEY", "not a key")
    await sfu.services.registry.create_room("Marked too", "m2", live_watermark="server")
    expert = sfu.participant("expert", room="m2", publish=False)
    try:
        await expert.join()
    except RuntimeError as exc:
        assert "watermark" in str(exc)
    else:
        raise AssertionError("joined a server-watermarked room without a watermark")
    assert await sfu.services.registry.list_participants("m2") == []


async def test_media_counters_show_what_is_forwarded_to_whom(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 10)
    await doctor.wait_for_frames(patient.id, "audio", 10)

    status, media = await api(sfu, "GET", "/api/rooms/r1/media")
    assert status == 200 and media["room"] == "r1"
    published = media["participants"][patient.id]["published"]
    assert published["video"]["packets"] > 0 and published["video"]["codec"] == "video/VP8"
    assert published["audio"]["codec"] == "audio/opus"
    assert published["audio"]["red"] is False  # aiortc peers do not accept RED
    received = media["participants"][doctor.id]["receiving"]
    assert received[f"{patient.id}:video"]["packets"] > 0 and received[f"{patient.id}:audio"]["packets"] > 0
    assert (await api(sfu, "GET", "/api/rooms/nope/media"))[0] == 404
    assert (await api(sfu, "GET", "/api/rooms/r1/media", key="wrong"))[0] == 401


async def test_a_body_that_arrives_in_pieces_is_read_whole(sfu):
    """An admin client on a slow link sends its JSON in several TCP segments: the API waits for
    all of it (one read returned only the first piece, and the request failed as bad_json)."""
    import asyncio

    async def pieces():
        for piece in (b'{"name": "Mrs Chen, ', b'follow-up", ', b'"id": "chen-2"}'):
            yield piece
            await asyncio.sleep(0.05)

    status, room = await api(sfu, "POST", "/api/rooms", data=pieces(),
                             headers={"Content-Type": "application/json"})
    assert status == 201 and room["id"] == "chen-2" and room["name"] == "Mrs Chen, follow-up", room


async def test_a_rooms_clinic_reaches_its_participants(sfu):
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "r3", "clinic": "瑞康皮肤科诊所"})
    assert status == 201 and room["clinic"] == "瑞康皮肤科诊所"
    for bad in ("", "x" * 81, "a\nb", 7):
        status, body = await api(sfu, "POST", "/api/rooms", json={"name": "r", "clinic": bad})
        assert status == 400 and "clinic" in body["message"], bad
    patient = sfu.participant("patient")
    patient.token = (await api(sfu, "POST", "/api/rooms/r3/links", json={"role": "patient"}))[1]["token"]
    joined = await patient.join()
    assert joined["room"]["clinic"] == "瑞康皮肤科诊所"


async def test_a_room_may_require_consent_before_anyone_is_recorded(sfu):
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "r4", "consent_required": True})
    assert status == 201 and room["consent_required"] is True
    status, room = await api(sfu, "POST", "/api/rooms", json={"name": "r", "id": "r5"})
    assert status == 201 and room["consent_required"] is False
    for bad in ("yes", 1, None):
        status, body = await api(sfu, "POST", "/api/rooms", json={"name": "r", "consent_required": bad})
        assert status == 400 and "consent_required" in body["message"], bad
