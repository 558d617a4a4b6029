"""The replay API (signalling/replay_api.py): a trainer lists a room's recordings, opens one
and plays each participant's media through short-lived signed URLs with HTTP Range;
every replay is watermarked for its viewer (traced by the real detector), prepared in
the background and served while it grows; every refusal is audited (those without valid
credentials as a summary); a recording replays while another one is being made; a purge
removes the prepared replays.

Recordings are made by recording live calls of real aiortc peers through the server
(the `sfu` fixture); the replay API runs as a second app on the same services, so these
tests do not depend on how signalling/app.py wires it in.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import aiohttp
import av
import pytest

from recorder.audit import Action, AuditLog
from recorder.keys import KeyStore
from recorder.replay_cache import REPLAY_CACHE_DIR
from recorder.store import RecordingStore
from recorder.watermark_store import open_registry
from signalling.replay_api import ReplayService, replay_routes
from watermark.registry import ISSUE_ACTION
from watermark.trace import trace_clip

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds

STROKE = {"kind": "freehand", "points": [[0.4, 0.5], [0.45, 0.52], [0.5, 0.55]], "item": "filler"}


class Clock:
    def __init__(self) -> None:
        import time
        self.offset = 0.0
        self._time = time.time

    def __call__(self) -> float:
        return self._time() + self.offset


class Replay:
    """The replay API served next to the `sfu` server, sharing its services (data dir, token secret)."""

    def __init__(self, sfu, server, service: ReplayService, clock: Clock) -> None:
        self.sfu = sfu
        self.server = server
        self.service = service
        self.clock = clock
        self.base_url = str(server.make_url("")).rstrip("/")
        self.data_dir = sfu.services.config.data_dir

    def trainer(self, room: str = "r1", **kwargs) -> str:
        return self.sfu.token("trainer", room=room, name=kwargs.pop("name", "Dr Trainer"), **kwargs)

    async def get(self, path: str, token: str | None = None, headers: dict | None = None, method: str = "GET"):
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.base_url + path, headers=headers) as response:
                body = await response.read()
                return response.status, response.headers, body

    async def json(self, path: str, token: str | None = None):
        import json
        status, headers, body = await self.get(path, token)
        return status, json.loads(body) if body else None

    def audit(self) -> list[dict]:
        return list(AuditLog.open(self.data_dir).authentic_entries())

    def failures(self) -> list[dict]:
        return [e for e in self.audit() if e["action"] == Action.ACCESS_FAILED]


@pytest.fixture
async def replay(sfu, aiohttp_server):
    from aiohttp import web

    clock = Clock()
    service = ReplayService(sfu.services.config.data_dir, sfu.services.issuer, wall_clock=clock)
    app = web.Application()
    app.add_routes(replay_routes(sfu.services, service=service))
    server = await aiohttp_server(app)
    return Replay(sfu, server, service, clock)


async def record(sfu, *, frames: int = 45, stop: bool = True, annotate: bool = True, people=None):
    """Records the room's live call; returns (recording id, {role: participant})."""
    if people is None:
        await sfu.room()
        people = {"patient": await sfu.join("patient", seed=1), "doctor": await sfu.join("doctor", seed=2)}
    patient, doctor = people["patient"], people["doctor"]
    await doctor.wait_for_frames(patient.id, "video", 5)
    start = len(doctor.messages)
    await doctor.send({"type": "record", "action": "start"})
    on = await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on", start=start)
    if annotate:
        await doctor.send({"type": "annotate", "op": "add", "shape": STROKE})
    await doctor.wait_for_frames(patient.id, "video", frames, timeout=15)
    if stop:
        await doctor.send({"type": "record", "action": "stop"})
        await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off"
                              and m.get("recording_id") == on["recording_id"])
    return on["recording_id"], people


def decode_video_frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


async def prepared(replay: Replay, media: dict, timeout: float = 60.0) -> dict:
    """Polls the media's status (which starts preparing it) until the watermarked replay is ready."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        status, st = await replay.json(media["status_url"])
        assert status == 200, st
        seen.append(st["state"])
        if st["state"] == "ready":
            st["seen"] = seen
            return st
        assert st["state"] in ("queued", "rendering"), st
        assert time.monotonic() < deadline, st
        await asyncio.sleep(0.1)


async def test_trainer_lists_opens_and_plays(replay):
    recording_id, people = await record(replay.sfu)
    trainer = replay.trainer()

    status, listing = await replay.json("/api/replay/recordings", trainer)
    assert status == 200 and listing["room"] == "r1"
    (item,) = listing["recordings"]
    assert item["id"] == recording_id and item["state"] == "complete" and item["duration_ms"] > 1000
    assert sorted((p["name"], p["role"]) for p in item["participants"]) == [
        ("Doctor", "doctor"), ("Patient", "patient")]
    listed = [e for e in replay.audit() if e["action"] == Action.REPLAY and e["details"].get("what") == "list"]
    assert listed[-1]["actor"] == "trainer-dr trainer" and listed[-1]["details"]["recordings"] == [recording_id]

    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", trainer)
    assert status == 200 and rec["id"] == recording_id and rec["state"] == "complete"
    opened = [e for e in replay.audit() if e["action"] == Action.REPLAY and e["target"] == recording_id]
    assert [e["actor"] for e in opened] == ["trainer-dr trainer"]  # the open is audited, with who
    roles = {m["participant"]["role"]: m for m in rec["media"]}
    assert set(roles) == {"patient", "doctor"}
    patient = roles["patient"]
    assert patient["key"] == people["patient"].id and patient["kinds"] == ["audio", "video"]
    assert patient["content_type"] == "video/webm" and 0 <= patient["start_ms"] < 2000
    assert patient["mime"] == 'video/webm; codecs="vp8,opus"' and patient["watermarked"]
    assert rec["duration_ms"] >= 1000
    kinds = [item["event"]["type"] for item in rec["events"]]
    assert {"track-owner", "recording", "annotation"} <= set(kinds) and "recording.stop" not in kinds
    annotation = next(i for i in rec["events"] if i["event"]["type"] == "annotation")
    assert annotation["event"]["shape"]["points"] == STROKE["points"]
    assert 0 <= annotation["at_ms"] <= rec["duration_ms"]
    assert "face_triangles" not in rec  # no face-anchored marks
    assert rec["urls_expire_at"] > replay.clock()

    # the media URL plays the viewer's watermarked replay once it is prepared: whole file, and ranges
    ready = await prepared(replay, patient)
    assert ready["progress"] == 1.0 and ready["watermark"] and ready["size"] == ready["ready_bytes"]
    assert ready["points"] and ready["points"][0][0] == 0 and ready["init_bytes"] == ready["points"][0][1]
    status, headers, body = await replay.get(patient["url"])
    assert status == 200 and headers["Content-Type"] == "video/webm" and headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "no-store"
    assert decode_video_frames(body) >= 40
    size = len(body)
    status, headers, part = await replay.get(patient["url"], headers={"Range": "bytes=0-"})
    assert status == 206 and part == body and headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
    status, headers, part = await replay.get(patient["url"], headers={"Range": "bytes=100-199"})
    assert status == 206 and part == body[100:200] and headers["Content-Range"] == f"bytes 100-199/{size}"
    status, headers, part = await replay.get(patient["url"], headers={"Range": "bytes=-64"})
    assert status == 206 and part == body[-64:]
    status, headers, part = await replay.get(patient["url"], headers={"Range": f"bytes={size - 10}-{size + 500}"})
    assert status == 206 and part == body[-10:]
    status, headers, _ = await replay.get(patient["url"], headers={"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}"
    status, headers, head = await replay.get(patient["url"], method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == size and head == b""
    body_patient = body
    # rendered once for this viewer, served from the cache after: one audited decryption, one watermark issued
    assert replay.service.renders.started == 1
    opened = [e for e in replay.audit() if e["action"] == Action.REPLAY and e["target"] == recording_id]
    assert len(opened) == 2
    issued = [e for e in replay.audit() if e["action"] == ISSUE_ACTION]
    assert [(e["details"]["viewer"], e["details"]["viewer_name"], e["details"]["purpose"], e["details"]["participant"],
             e["details"]["watermark_id"]) for e in issued] == [
        ("trainer-dr trainer", "Dr Trainer", "replay", people["patient"].id, ready["watermark"])]

    # the doctor's file too; fresh URLs replace expiring ones
    await prepared(replay, roles["doctor"])
    status, headers, body = await replay.get(roles["doctor"]["url"], headers={"Range": "bytes=0-"})
    assert status == 206 and decode_video_frames(body) >= 10
    status, fresh = await replay.json(f"/api/replay/recordings/{recording_id}/urls", trainer)
    assert status == 200 and set(fresh["urls"]) == {people["patient"].id, people["doctor"].id}
    assert set(fresh["status_urls"]) == set(fresh["urls"])
    status, _, again = await replay.get(fresh["urls"][people["patient"].id])
    assert status == 200 and again == body_patient
    assert replay.failures() == []


async def test_a_participant_who_rejoined_is_one_person_with_one_file(replay):
    """Mrs Chen's page is closed mid-recording and she joins again: a second participant id, the
    same identity. The trainer sees one person (listed once, one media entry with both joins and
    the time between them), and one watermarked file that plays across both joins."""
    sfu = replay.sfu
    await sfu.room()
    patient = await sfu.join("patient", seed=1, name="Mrs Chen")
    doctor = await sfu.join("doctor", seed=2)
    started = len(doctor.messages)
    recording_id, _ = await record(sfu, frames=20, stop=False, annotate=False,
                                   people={"patient": patient, "doctor": doctor})
    await patient.close()
    await doctor.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == patient.id,
                          start=started)
    await asyncio.sleep(1.0)
    again = await sfu.join("patient", seed=3, name="Mrs Chen")
    assert again.id != patient.id
    # (the doctor's page may receive her on the slot that carried her first join: count from now)
    await doctor.wait_for_frames(again.id, "video", 1, timeout=15)
    await doctor.wait_for_frames(again.id, "video", doctor.frames_from(again.id, "video") + 30, timeout=15)
    await doctor.send({"type": "record", "action": "stop"})
    await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off"
                          and m.get("recording_id") == recording_id, start=started)
    trainer = replay.trainer()

    status, listing = await replay.json("/api/replay/recordings", trainer)
    (item,) = listing["recordings"]
    assert item["kind"] == "call"
    assert sorted((p["name"], p["role"]) for p in item["participants"]) == [
        ("Doctor", "doctor"), ("Mrs Chen", "patient")]

    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", trainer)
    assert status == 200 and len(rec["participants"]) == 2
    chen = next(p for p in rec["participants"] if p["role"] == "patient")
    assert chen["name"] == "Mrs Chen" and chen["ids"] == [patient.id, again.id] and chen["id"] == patient.id
    assert chen["identity"].startswith("participant-")  # pseudonymised, as everywhere
    first, second = chen["joins"]
    assert first["id"] == patient.id and second["id"] == again.id
    assert first["from_ms"] < first["to_ms"] <= second["from_ms"] and second["to_ms"] is None
    assert [m["participant"]["role"] for m in rec["media"]].count("patient") == 1 and len(rec["media"]) == 2
    media = next(m for m in rec["media"] if m["participant"]["role"] == "patient")
    assert media["key"] == patient.id and media["participant"] == chen and media["kinds"] == ["audio", "video"]
    status, fresh = await replay.json(f"/api/replay/recordings/{recording_id}/urls", trainer)
    assert set(fresh["urls"]) == {m["key"] for m in rec["media"]}

    await prepared(replay, media)
    status, _, body = await replay.get(media["url"])
    assert status == 200
    with av.open(io.BytesIO(body)) as container:
        times = [float(f.time) * 1000 for f in container.decode(video=0)]
    end_of_file = media["start_ms"] + times[-1]
    assert end_of_file >= second["from_ms"] + 500, (times[-1], media, second)  # her second join is in it
    issued = [e for e in replay.audit() if e["action"] == ISSUE_ACTION]
    assert [e["details"]["participant"] for e in issued] == [patient.id]  # one file, one watermark id


async def test_photo_sets_are_listed_as_photo_sets(replay):
    """The stills of a guided capture are a recording without sound or video: listed with their
    count (kind "photos"), not as a recording of no length."""
    from recorder.manifest import room_label
    from recorder.stills import StillCapture

    recording_id, _ = await record(replay.sfu, frames=20, annotate=False)
    capture = await StillCapture.start(replay.data_dir, room=room_label("r1", replay.sfu.instances["r1"]),
                                       actor="doctor-doctor")
    for n in range(3):
        await capture.save(5000 + 700 * n, b"\xff\xd8\xff\xe0 a photo " + bytes([n]), {"pose": "front"})
    await capture.close()

    status, listing = await replay.json("/api/replay/recordings", replay.trainer())
    assert status == 200
    items = {r["id"]: r for r in listing["recordings"]}
    assert set(items) == {recording_id, capture.id}
    photos, call = items[capture.id], items[recording_id]
    assert (photos["kind"], photos["photos"], photos["state"], photos["duration_ms"]) == ("photos", 3, "complete", None)
    assert photos["participants"] == []
    assert call["kind"] == "call" and call["duration_ms"] > 0 and "photos" not in call


async def test_a_doctor_token_with_the_replay_permission_may_replay(replay):
    recording_id, _ = await record(replay.sfu, frames=20, annotate=False)
    token = replay.sfu.token("doctor", name="Dr Lee", permissions=["publish", "subscribe", "replay"])
    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", token)
    assert status == 200 and rec["media"]


async def test_refusals_are_clear_and_audited(replay):
    recording_id, people = await record(replay.sfu, frames=20)
    await replay.sfu.services.registry.create_room("Other", "r2")
    trainer = replay.trainer()
    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", trainer)
    url = rec["media"][0]["url"]
    assert replay.failures() == []

    cases = []

    async def refused(path, token=None, *, status, code, headers=None):
        got, response_headers, body = await replay.get(path, token, headers=headers)
        import json
        error = json.loads(body)
        assert (got, error["error"]) == (status, code), (path, got, error)
        assert error["message"]
        cases.append(code)
        return response_headers

    # no token, a forged one, one without the replay permission
    headers = await refused("/api/replay/recordings", status=401, code="unauthorized")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    await refused("/api/replay/recordings", "not-a-jwt", status=401, code="unauthorized")
    await refused(f"/api/replay/recordings/{recording_id}", headers={"Authorization": "Basic abc"},
                  status=401, code="unauthorized")
    doctor = replay.sfu.token("doctor", name="Dr Lee")  # record, annotate ... but not replay
    await refused("/api/replay/recordings", doctor, status=403, code="forbidden")
    await refused(f"/api/replay/recordings/{recording_id}", doctor, status=403, code="forbidden")
    expired = replay.sfu.token("trainer", ttl_s=1)
    replay.sfu.services.issuer._leeway = 0
    await asyncio.sleep(2.1)
    await refused("/api/replay/recordings", expired, status=401, code="token_expired")
    # a trainer of another room: sees none of r1's recordings and may not open them
    other = replay.trainer(room="r2", name="Other Trainer")
    status, listing = await replay.json("/api/replay/recordings", other)
    assert status == 200 and listing["room"] == "r2" and listing["recordings"] == []
    await refused(f"/api/replay/recordings/{recording_id}", other, status=403, code="wrong_room")
    await refused(f"/api/replay/recordings/{recording_id}/urls", other, status=403, code="wrong_room")
    await refused("/api/replay/recordings/20260101T000000Z-000000000000", trainer, status=404, code="not_found")
    await refused("/api/replay/recordings/..%2F..%2Fetc", trainer, status=404, code="not_found")

    # media: no signature, a tampered one, another identity or participant, an expired URL
    parsed = urlparse(url)
    query = {k: v[0] for k, v in parse_qs(parsed.query).items()}

    def with_query(path=parsed.path, **changes):
        return f"{path}?{urlencode({**query, **changes})}"

    await refused(parsed.path, status=401, code="unauthorized")
    sig = query["sig"]
    await refused(with_query(sig=sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")), status=403, code="bad_signature")
    await refused(with_query(sub="somebody-else"), status=403, code="bad_signature")
    await refused(with_query(exp=str(int(query["exp"]) + 3600)), status=403, code="bad_signature")
    other_key = next(m["key"] for m in rec["media"] if m["url"] != url)
    await refused(with_query(path=parsed.path.rsplit("/", 1)[0] + f"/{other_key}.webm"), status=403,
                  code="bad_signature")
    await refused(with_query(path=parsed.path.replace(".webm", ".mp4")), status=403, code="bad_signature")
    replay.clock.offset = replay.service.url_ttl_s + 1
    await refused(url, status=401, code="url_expired")
    replay.clock.offset = 0
    await prepared(replay, rec["media"][0])
    status, _, _ = await replay.get(url)
    assert status == 200  # the same URL before it expires

    # a valid credential's refusal is audited on its own, with who; the others (no valid token or
    # signature) are counted into a summary entry, written once per minute or at shutdown
    await replay.service.flush_refusals()
    failed = replay.failures()
    individual = [e for e in failed if not e["details"].get("summary")]
    anonymous = {"unauthorized", "token_expired", "bad_signature"}
    assert [e["details"]["error"] for e in individual] == [c for c in cases if c not in anonymous]  # in order
    summarised: dict[str, int] = {}
    for e in failed:
        for reason, n in e["details"].get("reasons", {}).items():
            summarised[reason] = summarised.get(reason, 0) + n
    assert summarised == {c: cases.count(c) for c in anonymous}
    by_code = {e["details"]["error"]: e for e in individual}
    assert by_code["forbidden"]["actor"] == "doctor-dr lee"
    assert by_code["wrong_room"]["actor"] == "trainer-other trainer" and by_code["wrong_room"]["target"] == recording_id
    assert by_code["url_expired"]["actor"] == "trainer-dr trainer"
    assert all(e["details"]["purpose"] == Action.REPLAY for e in failed)
    # a refusal never decrypted anything: the only replay entries are the trainer's open and the render
    replays = [e for e in replay.audit() if e["action"] == Action.REPLAY and e["target"] == recording_id]
    assert [e["actor"] for e in replays] == ["trainer-dr trainer"] * 2
    # the audit chain is intact
    assert AuditLog.open(replay.data_dir).verify().ok


async def test_a_flood_of_refusals_does_not_flood_the_audit_log(replay):
    # without credentials: counted, one summary entry (tests/signalling/test_replay_refusals.py has more)
    AuditLog.open(replay.data_dir, create=True)  # as after the first recording (no refusal writes it now)
    await asyncio.gather(*(replay.get("/api/replay/recordings") for _ in range(120)))
    assert replay.failures() == []
    await replay.service.flush_refusals()
    (summary,) = replay.failures()
    assert summary["details"]["reasons"] == {"unauthorized": 120}
    # with a valid token that may not replay: audited one by one, up to a rate; the rest counted
    doctor = replay.sfu.token("doctor", name="Dr Lee")
    await asyncio.gather(*(replay.get("/api/replay/recordings", doctor) for _ in range(120)))
    failed = replay.failures()[1:]
    assert 50 <= len(failed) < 120 and all(e["actor"] == "doctor-dr lee" for e in failed)
    await asyncio.sleep(1.0)
    await replay.get("/api/replay/recordings", doctor)
    last = replay.failures()[-1]
    assert last["details"]["suppressed_before"] == 120 - len(failed)


async def test_replay_while_another_recording_is_being_made(replay):
    first, people = await record(replay.sfu, frames=20)
    second, _ = await record(replay.sfu, frames=15, stop=False, people=people)
    live = replay.sfu.services.rooms.live["r1"]
    assert live.recording is not None and live.recording.id == second
    trainer = replay.trainer()

    status, listing = await replay.json("/api/replay/recordings", trainer)
    assert status == 200
    states = {r["id"]: r["state"] for r in listing["recordings"]}
    assert states == {first: "complete", second: "recording"}
    assert [r["id"] for r in listing["recordings"]] == [second, first]  # newest first
    status, error = await replay.json(f"/api/replay/recordings/{second}", trainer)
    assert status == 409 and error["error"] == "recording_in_progress"

    # the finished one plays while the other is still being written
    status, rec = await replay.json(f"/api/replay/recordings/{first}", trainer)
    assert status == 200
    for media in rec["media"]:
        await prepared(replay, media)
        status, _, body = await replay.get(media["url"], headers={"Range": "bytes=0-"})
        assert status == 206 and decode_video_frames(body) > 0
    assert replay.sfu.services.rooms.live["r1"].recording.id == second
    await people["patient"].wait_for_frames(people["doctor"].id, "video", 10)  # the call goes on

    await people["doctor"].send({"type": "record", "action": "stop"})
    await people["doctor"].wait_for(lambda m: m["type"] == "recording" and m["state"] == "off"
                                    and m.get("recording_id") == second)
    status, rec = await replay.json(f"/api/replay/recordings/{second}", trainer)
    assert status == 200 and rec["state"] == "complete"
    failed = replay.failures()
    assert [(e["details"]["error"], e["target"]) for e in failed] == [("recording_in_progress", second)]


async def test_trainer_page_is_served(replay):
    status, headers, body = await replay.get("/trainer")
    assert status == 200 and headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    assert b"/static/js/trainer.js" in body and b"https://" not in body  # nothing from a CDN


async def test_face_anchored_marks_bring_their_landmarks(replay):
    """Landmarks (478 points at 5 Hz) are sent only around face-anchored marks, which need
    them to be drawn, together with the face mesh's triangles; otherwise they are dropped."""
    from recorder.keys import KeyStore
    from recorder.writer import RecordingWriter

    data_dir = replay.data_dir
    await replay.sfu.room()  # trainer links are for a room the server knows
    writer = RecordingWriter.start(data_dir, KeyStore.open(data_dir, create=True), room="r1",
                                   audit=AuditLog.open(data_dir, create=True), actor="doctor-1", fsync=False)
    landmarks = [[0.5, 0.5]] * 478

    def metrics(t):
        return {"type": "analysis", "kind": "face-metrics", "participant": "p-1", "t_ms": t,
                "face": {"pose": {"yaw": 1.0, "pitch": 0.0, "roll": 0.0}, "sharpness": 40.0, "landmarks": landmarks}}

    writer.write_event(1000, {"type": "track-owner", "participant": {"id": "p-1", "name": "P", "role": "patient"}})
    for t in range(1000, 12000, 200):
        if t == 5000:
            writer.write_event(t, {"type": "annotation", "op": "add", "version": 1, "t_ms": t, "author": "doctor-1",
                                   "shape": {"id": "a1", "kind": "circle", "anchor": "face", "center": [10, 0.2, 0.2],
                                             "edge": [11, 0.3, 0.3], "color": "#ff2fd0", "width": 4.0}})
        if t == 8000:
            writer.write_event(t, {"type": "annotation", "op": "undo", "version": 2, "t_ms": t, "author": "doctor-1",
                                   "ids": ["a1"]})
        writer.write_event(t, metrics(t))
    writer.close()

    status, rec = await replay.json(f"/api/replay/recordings/{writer.id}", replay.trainer())
    assert status == 200 and rec["media"] == []
    assert len(rec["face_triangles"]) == 852 and all(len(t) == 3 for t in rec["face_triangles"])
    kept = [i["at_ms"] for i in rec["events"] if i["event"].get("kind") == "face-metrics"
            and "landmarks" in i["event"]["face"]]
    dropped = [i["at_ms"] for i in rec["events"] if i["event"].get("kind") == "face-metrics"
               and "landmarks" not in i["event"]["face"]]
    # the mark lived 4000..7000 ms on the recording's clock (it starts at 1000); one second either side
    assert kept and min(kept) == 3000 and max(kept) == 8000
    assert dropped and all(t < 3000 or t > 8000 for t in dropped)
    assert all(i["event"]["face"]["sharpness"] == 40.0
               for i in rec["events"] if i["event"].get("kind") == "face-metrics")


async def test_a_recording_cut_short_replays_as_incomplete(replay):
    """A writer that died (no final segments, no stop summary) leaves a recording that is
    listed and replayed as incomplete, up to its last whole segment."""
    from recorder.keys import KeyStore
    from recorder.writer import RecordingWriter

    data_dir = replay.data_dir
    await replay.sfu.room()  # trainer links are for a room the server knows
    writer = RecordingWriter.start(data_dir, KeyStore.open(data_dir, create=True), room="r1",
                                   audit=AuditLog.open(data_dir, create=True), actor="doctor-1", fsync=False,
                                   segment_max_ms=100)
    chen = {"id": "p-1", "name": "Mrs Chen", "role": "patient"}
    writer.write_event(500, {"type": "track-owner", "participant": dict(chen)})
    for t in range(600, 3000, 100):
        writer.write_event(t, {"type": "participant-updated", "t_ms": t, "participant": dict(chen)})
    writer._release()  # the process died: the lock is gone, the last buffered events with it

    trainer = replay.trainer()
    status, listing = await replay.json("/api/replay/recordings", trainer)
    (item,) = listing["recordings"]
    assert item["state"] == "incomplete" and item["participants"] == [{"name": "Mrs Chen", "role": "patient"}]
    status, rec = await replay.json(f"/api/replay/recordings/{writer.id}", trainer)
    assert status == 200 and rec["state"] == "incomplete" and 2000 <= rec["duration_ms"] < 2500


async def test_a_part_cut_short_is_listed_as_long_as_its_media_and_the_next_names_it(replay):
    """A node killed mid-recording leaves a part whose events stop early while its media went
    on: the listing says how long its sealed media lasts, and the part that carried it on
    (on the room's next node) names it."""
    from recorder.keys import KeyStore
    from recorder.manifest import TrackInfo
    from recorder.writer import RecordingWriter

    data_dir = replay.data_dir
    await replay.sfu.room()
    keys, audit = KeyStore.open(data_dir, create=True), AuditLog.open(data_dir, create=True)
    first = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1", fsync=False,
                                  segment_max_ms=100, tracks=[TrackInfo("p-1-audio", "audio", "opus", 48000)])
    first.write_event(500, {"type": "track-owner", "participant": {"id": "p-1", "name": "Mrs Chen", "role": "patient"}})
    first.write_event(600, {"type": "participant-updated", "t_ms": 600,
                            "participant": {"id": "p-1", "name": "Mrs Chen", "role": "patient"}})
    for t in range(500, 6000, 20):
        first.write_frame("p-1-audio", t, t * 48, False, b"\xfc" + bytes(60))
    first._release()  # the node was killed: the lock is gone, the unsealed tail with it
    second = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1", fsync=False,
                                   continues=first.id, part=2)
    second.close()

    status, listing = await replay.json("/api/replay/recordings", replay.trainer())
    items = {item["id"]: item for item in listing["recordings"]}
    assert items[first.id]["state"] == "incomplete" and (items[first.id]["part"], items[first.id]["continues"]) \
        == (1, None)
    assert 5000 <= items[first.id]["duration_ms"] < 5500  # not 100 ms: its two events
    assert (items[second.id]["part"], items[second.id]["continues"]) == (2, first.id)


async def test_each_viewer_is_served_a_replay_that_names_them(replay, tmp_path):
    """Two trainers replay the same recording through the API; each served file, decoded and
    traced by the real detector against the real registry, names its own viewer."""
    recording_id, people = await record(replay.sfu, frames=75, annotate=False)
    clips = {}
    for name in ("Dr Ana", "Dr Ben"):
        token = replay.trainer(name=name)
        status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", token)
        assert status == 200
        patient = next(m for m in rec["media"] if m["participant"]["role"] == "patient")
        ready = await prepared(replay, patient)
        status, headers, body = await replay.get(patient["url"])
        assert status == 200 and len(body) == ready["size"]
        clip = tmp_path / f"{name}.webm"
        clip.write_bytes(body)
        clips[f"trainer-{name.lower()}"] = (clip, ready["watermark"])
    assert clips["trainer-dr ana"][1] != clips["trainer-dr ben"][1]

    registry = open_registry(replay.data_dir)
    for viewer, (clip, watermark) in clips.items():
        traced = trace_clip(clip, registry)
        assert traced.verdict == "identified", (viewer, traced.as_dict())
        assert (traced.issued.viewer, traced.issued.hex_id, traced.issued.purpose, traced.issued.recording_id) == (
            viewer, watermark, "replay", recording_id)
    issued = {e["details"]["viewer"]: e for e in replay.audit() if e["action"] == ISSUE_ACTION}
    assert set(issued) == set(clips) and all(e["actor"] == viewer for viewer, e in issued.items())
    assert AuditLog.open(replay.data_dir).verify().ok


async def test_a_replay_is_served_only_as_it_is_prepared(replay):
    """While the replay waits for a render slot it is 'queued' and no byte is served (503
    'preparing', with Retry-After); the page's status then follows it to 'ready'."""
    recording_id, _ = await record(replay.sfu, frames=30, annotate=False)
    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", replay.trainer())
    media = rec["media"][0]
    slots = replay.service.renders._slots
    held = 0
    while slots.acquire(blocking=False):  # every render slot busy: as when other replays are being prepared
        held += 1
    try:
        status, st = await replay.json(media["status_url"])
        assert status == 200 and st["state"] == "queued" and st["ready_bytes"] == 0 and st["watermark"] is None
        for headers in ({}, {"Range": "bytes=0-"}, {"Range": "bytes=-100"}):
            status, response_headers, body = await replay.get(media["url"], headers=headers)
            assert status == 503 and response_headers["Retry-After"] == "1", (headers, status, body)
            assert b'"preparing"' in body
    finally:
        for _ in range(held):
            slots.release()
    ready = await prepared(replay, media)  # the slot is free: it is rendered and becomes ready
    status, headers, body = await replay.get(media["url"], headers={"Range": f"bytes=0-{ready['init_bytes'] - 1}"})
    assert status == 206 and headers["Content-Range"] == f"bytes 0-{ready['init_bytes'] - 1}/{ready['size']}"
    assert body[:4] == b"\x1a\x45\xdf\xa3"


async def test_prepared_replays_are_encrypted_private_and_purged(replay):
    recording_id, _ = await record(replay.sfu, frames=30, annotate=False)
    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", replay.trainer())
    for media in rec["media"]:
        await prepared(replay, media)
    status, _, body = await replay.get(rec["media"][0]["url"])
    assert status == 200

    folder = Path(replay.data_dir) / REPLAY_CACHE_DIR / recording_id
    files = sorted(folder.iterdir())
    assert len(files) == len(rec["media"]) == 2
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    on_disk = b"".join(f.read_bytes() for f in files)
    for at in (0, len(body) // 2, len(body) - 64):  # no 64-byte piece of what was served is on disk
        assert body[at:at + 64] not in on_disk

    keys = KeyStore.open(replay.data_dir)
    result = RecordingStore(replay.data_dir, keys=keys, audit=AuditLog.open(replay.data_dir)).purge(0, actor="cli:ops")
    assert recording_id in result.purged
    assert not folder.exists() and not any(f.exists() for f in files)
    for media in rec["media"]:  # a running server stops serving a purged recording's replays
        status, _, _ = await replay.get(media["url"], headers={"Range": "bytes=0-99"})
        assert status == 404
        status, _ = await replay.json(media["status_url"])
        assert status == 404
    assert replay.service.renders.jobs() == []
    assert os.listdir(Path(replay.data_dir) / REPLAY_CACHE_DIR) == []


async def test_a_replay_being_prepared_serves_what_is_ready(replay, tmp_path):
    """Mid-render, only whole clusters written so far are served, with an unknown total
    (`bytes a-b/*`); asking for the rest, the whole file or its end gets 503 'preparing'. The
    state is the real one a render passes through: its spool and index holding the file's first
    clusters (made from the finished file, so the test does not race the render)."""
    from recorder import replay_spool
    from recorder.webm_index import ClusterIndex

    recording_id, _ = await record(replay.sfu, frames=90, annotate=False)
    status, rec = await replay.json(f"/api/replay/recordings/{recording_id}", replay.trainer())
    media = next(m for m in rec["media"] if m["participant"]["role"] == "patient")
    ready = await prepared(replay, media)
    status, _, full = await replay.get(media["url"])
    assert status == 200 and len(ready["points"]) >= 2
    (job,) = [j for j in replay.service.renders.jobs() if j.group_key == media["key"]]
    cut = ready["points"][1][1] + 1000  # the second cluster is being written
    index = ClusterIndex()
    index.feed(full[:cut])  # as the render process does: sealed and announced up to the last whole element
    complete = index.complete_bytes
    assert complete == ready["points"][1][1] and index.points == [tuple(p) for p in ready["points"][:1]]
    path = tmp_path / "growing.webm.sealed"
    key, file_id = replay_spool.new_secret()
    replay_spool.create(path)
    writer = replay_spool.SpoolWriter(path, key, file_id)
    writer.append(full[:cut])
    spool = replay_spool.SpoolReader(path, key, file_id)
    spool.add(writer.seal(complete))
    writer.close()
    finished = job.spool
    with job._lock:
        job.spool, job.points, job.state = spool, list(index.points), "rendering"

    status, st = await replay.json(media["status_url"])
    assert (st["state"], st["ready_bytes"], st["size"], st["points"]) == (
        "rendering", complete, None, ready["points"][:1])
    status, headers, body = await replay.get(media["url"], headers={"Range": "bytes=0-"})
    assert status == 206 and headers["Content-Range"] == f"bytes 0-{complete - 1}/*" and body == full[:complete]
    status, headers, body = await replay.get(media["url"], headers={"Range": "bytes=100-199"})
    assert status == 206 and headers["Content-Range"] == "bytes 100-199/*" and body == full[100:200]
    status, headers, body = await replay.get(media["url"], headers={"Range": f"bytes=100-{cut}"})
    assert status == 206 and body == full[100:complete]  # cut at what is ready
    for headers in ({"Range": f"bytes={complete}-"}, {}, {"Range": "bytes=-64"}):
        status, response, body = await replay.get(media["url"], headers=headers)
        assert status == 503 and b'"preparing"' in body and response["Retry-After"] == "1", headers
    assert decode_video_frames(full[:complete]) >= 10  # what was served so far (the first 0.5 s cluster) plays
    finished.remove()
