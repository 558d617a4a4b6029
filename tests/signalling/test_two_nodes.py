"""Two run.py nodes sharing one redis-server, started as an operator would.

A room made through one node's admin API is joined on the other with a link the first
minted; the link revoked on the first is then refused on the second, and the call it
had joined there ends. A join reaching the node that does not run the room's call is
relayed to the one that does, and media flows; when that node is killed, the next join
starts the call on the other once its claim has expired, and a recording it was making
carries on there as the next part. A node that cannot reach Redis does not start; while
Redis is down, calls go on and joins are told to retry.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from loadtest.participant import SyntheticParticipant
from loadtest.sources import PatternVideoTrack, ToneAudioTrack
from recorder.keys import KeyStore
from recorder.manifest import Manifest
from recorder.reader import RecordingReader
from recorder.segments import SegmentScanner
from recorder.store import RecordingStore
from signalling.placement import CLAIM_TTL_MS
from tests.redis_server import RedisServer
from tests.webhooks.receiver import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


class Node:
    def __init__(self, tmp_path: Path, name: str, redis_url: str, demo: bool = False,
                 extra: tuple[str, ...] = ()) -> None:
        self.demo = demo
        self.extra = extra
        self.data_dir = tmp_path / name
        self.log = tmp_path / f"{name}.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.redis_url = redis_url
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "run.py", "--port", str(self.port), "--data-dir", str(self.data_dir),
             *([] if self.demo else ["--no-demo-room"]),
             "--processors", "", "--media-host-address", "127.0.0.1", "--redis-url", self.redis_url,
             "--workers", "1", *self.extra],  # one process: a node is killed by its pid
            cwd=ROOT, stdout=self.log.open("w"), stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the node exited: {self.log.read_text()}")
                try:
                    async with http.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise TimeoutError(f"the node did not start: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    async def admin(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        key = (self.data_dir / "admin.key").read_text().strip()
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.url + path, json=body,
                                    headers={"Authorization": f"Bearer {key}"}) as response:
                return response.status, await response.json()


async def room_with_links(node: Node, room_id: str, *roles: str) -> dict[str, str]:
    """A room made through `node`'s admin API (no processors), and a link token per role."""
    status, room = await node.admin("POST", "/api/rooms", {"id": room_id, "name": "Room", "processors": []})
    assert status == 201, room
    return {role: (await node.admin("POST", f"/api/rooms/{room_id}/links", {"role": role}))[1]["token"]
            for role in roles}


async def join(node: Node, token: str) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse, dict]:
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(node.url.replace("http", "ws", 1) + "/ws")
    await ws.send_json({"type": "join", "v": 1, "token": token})
    while True:
        frame = await ws.receive(timeout=10)
        if frame.type != aiohttp.WSMsgType.TEXT:  # closed before a word: e.g. a relay to a dead node
            return http, ws, {"type": "socket-closed", "code": ws.close_code}
        message = frame.json()
        if message["type"] in ("joined", "error"):
            return http, ws, message


async def rejoin(node: Node, token: str, seed: int, within: float) -> SyntheticParticipant:
    """A publishing page's reconnects to `node` until one is served (while the dead node's claim on
    the room lasts, the join is relayed to it and the socket closes)."""
    deadline = time.monotonic() + within
    while True:
        page = SyntheticParticipant(node.url, token, audio=ToneAudioTrack(), video=PatternVideoTrack(seed=seed))
        try:
            await page.join(timeout=5)
            return page
        except (RuntimeError, TimeoutError, aiohttp.ClientError):
            await page.close(leave=False)
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.25)


async def sealed_segments(data_dir: Path, recording_id: str, track_id: str, at_least: int,
                          timeout: float = 60) -> int:
    """How many whole segments the track has on disk, once it has `at_least` (read without the key)."""
    deadline = time.monotonic() + timeout
    directory = data_dir / "recordings" / recording_id
    while True:
        track = Manifest.load(directory)[0].track(track_id) if (directory / "manifest.json").exists() else None
        count = 0
        if track is not None and (directory / track.file).exists():
            with open(directory / track.file, "rb") as f:
                count = sum(1 for _ in SegmentScanner(f, (directory / track.file).stat().st_size, track_id,
                                                      headers_only=True))
        if count >= at_least:
            return count
        assert time.monotonic() < deadline, f"{track_id} of {recording_id}: {count} segments"
        await asyncio.sleep(0.25)


@pytest.fixture(params=[False])
async def two_nodes(tmp_path, redis_server, request):
    demo = request.param
    a, b = (Node(tmp_path, "a", redis_server.url, demo, ("--drain-grace", "3")),
            Node(tmp_path, "b", redis_server.url, demo))
    try:
        await a.start()
        # one service: every node signs and checks links with the same secret, and takes the same admin key
        b.data_dir.mkdir(mode=0o700)
        for secret in ("token.secret", "admin.key"):
            shutil.copy2(a.data_dir / secret, b.data_dir / secret)
        await b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


async def test_a_room_and_its_links_made_on_one_node_work_on_the_other_and_a_revocation_ends_them(two_nodes):
    a, b = two_nodes
    status, room = await a.admin("POST", "/api/rooms", {"id": "chen-1", "name": "Mrs Chen", "processors": []})
    assert status == 201, room
    status, listed = await b.admin("GET", "/api/rooms/chen-1")
    assert status == 200 and listed["instance"] == room["instance"], listed
    status, link = await a.admin("POST", "/api/rooms/chen-1/links", {"role": "patient"})
    assert status in (200, 201), link

    http, ws, joined = await join(b, link["token"])
    try:
        assert joined["type"] == "joined", joined
        status, revoked = await a.admin("DELETE", f"/api/rooms/chen-1/links/{link['jti']}")
        assert status == 200, revoked
        closed = None
        while closed is None:  # the session on b ends, told why
            message = await ws.receive_json(timeout=5)
            if message["type"] == "closed":
                closed = message
        assert closed["reason"] == "kicked"
    finally:
        await ws.close()
        await http.close()

    http, ws, refused = await join(b, link["token"])
    await ws.close()
    await http.close()
    assert refused["type"] == "error" and refused["code"] == "link_revoked", refused


@pytest.mark.parametrize("two_nodes", [True], indirect=True)
async def test_a_node_starting_leaves_the_demo_room_another_runs_open(two_nodes):
    a, b = two_nodes  # both print demo links; b started while a's demo room was open
    status, room = await a.admin("GET", "/api/rooms/demo")
    assert status == 200 and room["open"], room
    status, lives = await b.admin("GET", "/api/rooms/demo/instances")
    assert status == 200 and len(lives["instances"]) == 1, lives  # b did not close and recreate it
    assert "patient:" in b.log.read_text()


async def test_a_node_that_cannot_reach_redis_does_not_start(tmp_path, redis_server):
    redis_server.stop()
    node = Node(tmp_path, "lonely", redis_server.url)
    with pytest.raises(RuntimeError, match="exited"):
        await node.start(timeout=30)
    assert "Redis cannot be reached" in node.log.read_text()


async def test_while_redis_is_down_calls_go_on_joins_are_told_to_retry_and_then_succeed(tmp_path):
    redis = RedisServer(tmp_path / "redis", persist=True)
    redis.start()
    node = Node(tmp_path, "a", redis.url)
    try:
        await node.start()
        links = list((await room_with_links(node, "r1", "doctor", "patient")).values())
        http, ws, joined = await join(node, links[0])
        assert joined["type"] == "joined", joined
        try:
            redis.stop()
            http2, ws2, refused = await join(node, links[1])
            assert (refused["type"], refused.get("code"), refused.get("fatal")) == ("error", "unavailable", True)
            await ws2.receive(timeout=5)
            assert ws2.close_code == 1013  # try again later
            await ws2.close()
            await http2.close()
            await ws.send_json({"type": "ping"})  # the call in progress is not touched
            while (await ws.receive_json(timeout=5))["type"] != "pong":
                pass

            redis.start()  # back, with what it held: the next join works, no restart
            deadline = time.monotonic() + 15
            while True:
                http2, ws2, again = await join(node, links[1])
                await ws2.close()
                await http2.close()
                if again["type"] == "joined" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert again["type"] == "joined", again
        finally:
            await ws.close()
            await http.close()
    finally:
        node.stop()
        redis.stop()


async def test_a_join_reaching_another_node_is_relayed_to_the_rooms_node_and_media_flows(two_nodes):
    a, b = two_nodes
    tokens = await room_with_links(a, "r1", "patient", "doctor")
    patient = SyntheticParticipant(a.url, tokens["patient"], audio=ToneAudioTrack(), video=PatternVideoTrack(seed=1))
    doctor = SyntheticParticipant(b.url, tokens["doctor"], audio=ToneAudioTrack(), video=PatternVideoTrack(seed=2))
    try:
        await patient.join()  # the room's call starts on a
        await doctor.join()  # reached b: relayed to a, its media straight to a
        await doctor.wait_for_frames(patient.id, "video", 10, timeout=20)
        await patient.wait_for_frames(doctor.id, "video", 10, timeout=20)
        status, on_a = await a.admin("GET", "/api/rooms/r1/participants")
        assert sorted(p["role"] for p in on_a["participants"]) == ["doctor", "patient"], on_a
        # one call, on one node: asked through b, the answer is a's
        status, on_b = await b.admin("GET", "/api/rooms/r1/participants")
        assert status == 200 and on_b == on_a, on_b
        status, media = await b.admin("GET", "/api/rooms/r1/media")
        assert status == 200 and set(media["participants"]) == {patient.id, doctor.id}, media
        status, kicked = await b.admin("DELETE", f"/api/rooms/r1/participants/{doctor.id}")
        assert status == 200 and kicked["kicked"] == doctor.id, kicked  # made on a, where the doctor is
        await patient.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == doctor.id)
    finally:
        await doctor.close()
        await patient.close()


async def test_when_the_rooms_node_dies_the_next_join_starts_the_call_on_another(two_nodes):
    a, b = two_nodes
    tokens = await room_with_links(a, "r1", "patient", "doctor")
    http, ws, joined = await join(a, tokens["patient"])
    assert joined["type"] == "joined"
    await ws.close()
    await http.close()
    http, ws, joined = await join(a, tokens["doctor"])  # the call runs on a
    assert joined["type"] == "joined"
    assert a.proc is not None
    a.proc.kill()  # no clean shutdown: its claim on the room has to expire
    a.proc.wait()
    await http.close()
    killed = time.monotonic()
    while True:
        http, ws, again = await join(b, tokens["patient"])
        await ws.close()
        await http.close()
        if again["type"] == "joined" or time.monotonic() - killed > 2 * CLAIM_TTL_MS / 1000 + 5:
            break
        await asyncio.sleep(0.25)
    took = time.monotonic() - killed
    print(f"the room's call started again on the other node {took:.1f} s after its node was killed")
    assert again["type"] == "joined", again
    assert took <= CLAIM_TTL_MS / 1000 + 3


async def test_a_recording_on_a_killed_node_carries_on_as_the_next_part_on_the_other(two_nodes):
    a, b = two_nodes
    token = (await room_with_links(a, "r1", "patient"))["patient"]
    patient = SyntheticParticipant(a.url, token, audio=ToneAudioTrack(), video=PatternVideoTrack(seed=1))
    again: SyntheticParticipant | None = None
    try:
        await patient.join()  # the call runs on a
        status, started = await a.admin("POST", "/api/rooms/r1/recording", {"action": "start"})
        assert status == 201, started
        first = started["recording_id"]
        await patient.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
        sealed = await sealed_segments(a.data_dir, first, f"{patient.id}-video", 3)
        assert a.proc is not None
        a.proc.kill()  # mid-recording, no clean shutdown: nothing is sealed or stopped
        a.proc.wait()
        await patient.close(leave=False)

        again = await rejoin(b, token, seed=1, within=2 * CLAIM_TTL_MS / 1000 + 30)  # the page reconnects
        on = await again.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on", timeout=30)
        second = on["recording_id"]
        assert (on["part"], on["continues"], on["by"]) == (2, first, "admin-api"), on
        await sealed_segments(b.data_dir, second, f"{again.id}-video", 2)  # part 2 receives media
        status, stopped = await b.admin("POST", "/api/rooms/r1/recording", {"action": "stop"})
        assert status == 200 and stopped["recording_id"] == second, stopped

        part2 = RecordingReader.open(b.data_dir, second, KeyStore.open(b.data_dir))
        assert (part2.manifest.continues, part2.manifest.part) == (first, 2)
        assert part2.verify().status == "complete"
        assert sum(1 for _ in part2.frames(f"{again.id}-video")) >= 10
        # the admin's trainer link lists both parts' relation (part 1 is on a's disk, not b's)
        status, trainer = await b.admin("POST", "/api/rooms/r1/links", {"role": "trainer"})
        async with aiohttp.ClientSession() as http:
            async with http.get(b.url + "/api/replay/recordings",
                                headers={"Authorization": f"Bearer {trainer['token']}"}) as response:
                listing = await response.json()
        (item,) = listing["recordings"]
        assert (item["id"], item["part"], item["continues"], item["state"]) == (second, 2, first, "complete")

        # part 1, cut short on a's disk: listed, with every segment sealed before the kill readable
        (info,) = RecordingStore(a.data_dir).list()
        assert (info.id, info.state, info.part) == (first, "open", 1)
        part1 = RecordingReader.open(a.data_dir, first, KeyStore.open(a.data_dir))
        report = part1.verify()
        assert report.status == "incomplete" and not report.problems, report
        video = next(t for t in report.tracks if t.track_id == f"{patient.id}-video")
        assert video.segments >= sealed and video.frames == sum(1 for _ in part1.frames(f"{patient.id}-video"))
    finally:
        for page in (patient, again):
            if page is not None:
                await page.close()


async def test_a_draining_node_takes_no_new_room_and_moves_its_calls_when_the_grace_is_over(two_nodes):
    a, b = two_nodes
    tokens = {room_id: (await room_with_links(a, room_id, "patient"))["patient"] for room_id in ("r1", "r2")}
    http, ws, joined = await join(a, tokens["r1"])  # r1's call runs on a
    assert joined["type"] == "joined"
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)  # an upgrade: a drains, with a 3 s grace
    sent = time.monotonic()
    await asyncio.sleep(0.5)

    http2, ws2, placed = await join(a, tokens["r2"])  # a new room's first join reaches a: placed on b
    try:
        assert placed["type"] == "joined", placed
        status, on_b = await b.admin("GET", "/api/rooms/r2/participants")
        assert [p["role"] for p in on_b["participants"]] == ["patient"], on_b

        closed = None
        while closed is None:  # r1's call on a outlives the grace: moved, its page told to rejoin
            message = await ws.receive_json(timeout=10)
            if message["type"] == "closed":
                closed = message
        assert closed["reason"] == "moved" and 2.5 <= time.monotonic() - sent <= 8, closed
        await ws.close()
        await http.close()
        assert a.proc.wait(timeout=15) == 0  # then a stops, cleanly

        http, ws, rejoined = await join(b, tokens["r1"])  # the page's rejoin: the call goes on, on b
        assert rejoined["type"] == "joined", rejoined
        status, on_b = await b.admin("GET", "/api/rooms/r1/participants")
        assert len(on_b["participants"]) == 1, on_b
    finally:
        for socket_ in (ws, ws2):
            await socket_.close()
        for session in (http, http2):
            await session.close()


async def test_an_admin_call_drains_a_node_without_stopping_it(two_nodes):
    a, b = two_nodes
    token = (await room_with_links(a, "r1", "patient"))["patient"]
    http, ws, joined = await join(a, token)
    assert joined["type"] == "joined"
    status, node = await a.admin("GET", "/api/node")
    assert status == 200 and (node["rooms"], node["participants"], node["draining"]) == (1, 1, False), node
    assert (await a.admin("POST", "/api/node/drain", {"grace_s": -1}))[0] == 400
    status, answer = await a.admin("POST", "/api/node/drain", {"grace_s": 0})
    assert status == 202 and answer["draining"], answer
    assert (await a.admin("POST", "/api/node/drain", {}))[0] == 409
    while (message := await ws.receive_json(timeout=10))["type"] != "closed":
        pass
    assert message["reason"] == "moved"
    await ws.close()
    await http.close()
    http, ws, rejoined = await join(a, token)  # the page rejoins where it was: placed on b, relayed
    try:
        assert rejoined["type"] == "joined", rejoined
        status, on_b = await b.admin("GET", "/api/rooms/r1/participants")
        assert len(on_b["participants"]) == 1, on_b
        assert a.proc is not None and a.proc.poll() is None  # a is still up
    finally:
        await ws.close()
        await http.close()


async def test_closing_a_room_through_another_node_ends_its_call(two_nodes):
    a, b = two_nodes
    token = (await room_with_links(a, "r1", "patient"))["patient"]
    http, ws, joined = await join(a, token)  # the call runs on a
    try:
        assert joined["type"] == "joined"
        status, _ = await b.admin("DELETE", "/api/rooms/r1")
        assert status == 200
        while (message := await ws.receive_json(timeout=10))["type"] != "closed":
            pass
        assert message["reason"] == "room-closed"
    finally:
        await ws.close()
        await http.close()
