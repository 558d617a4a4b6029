"""signalling/session.py: what one participant's session decides, on the real app in-process
(pytest-aiohttp's aiohttp_client around signalling.app.create_app, which cancels a handler
when its client goes, as a busy server may).

The order of messages on join, one offer at a time and the answer clock, the flood guard's
verdicts, the bounded outbox, and the clean-up when a client leaves, stops answering, stops
reading or vanishes. Refusals of bad input and tokens are tests/signalling/test_bad_input.py's;
media is not looked at here (clients are bare WebSockets that never answer unless a test says so).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Optional

import aiohttp
import pytest

from loadtest.participant import SyntheticParticipant
from loadtest.sources import PatternVideoTrack, ToneAudioTrack
from signalling.app import Services, build_services, create_app
from signalling.config import ServerConfig

CLINIC = "Call the clinic on 021-5555 0123"


class Page:
    """A bare WebSocket client that reads everything the server sends into `messages` (unless
    made with read=False: a client that stops reading), and notes how its socket ended."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, read: bool = True) -> None:
        self.http = http
        self.ws = ws
        self.messages: list[dict] = []
        self.close_code: Optional[int] = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read()) if read else None
        self.id: Optional[str] = None

    async def _read(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                self.close_code = self.ws.close_code
                self.ended.set()
                self._changed.set()
                return
            self.messages.append(json.loads(msg.data))
            self._changed.set()

    async def send(self, message: Any) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = next((m for m in self.messages if predicate(m)), None)
            if found is not None:
                return found
            if self.ended.is_set():
                raise ConnectionError(f"socket ended ({self.close_code}); got {self.types()}")
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no such message in {timeout} s; got {self.types()}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_type(self, msg_type: str, timeout: float = 10.0) -> dict:
        return await self.wait_for(lambda m: m["type"] == msg_type, timeout)

    async def wait_ended(self, timeout: float = 10.0) -> Optional[int]:
        await asyncio.wait_for(self.ended.wait(), timeout)
        return self.close_code

    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    def of_type(self, msg_type: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == msg_type]

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.ws.close()
        await self.http.close()

    def vanish(self) -> None:
        """Drop the TCP connection at once (a reset, as when a phone loses its network), no close frame."""
        assert self.ws._response is not None and self.ws._response.connection is not None
        transport = self.ws._response.connection.transport
        assert transport is not None
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


def _small_receive_buffer(addr_info: tuple) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window stays small
    return sock


class Sfu:
    def __init__(self, services: Services, url: str) -> None:
        self.services = services
        self.url = url
        self.ws_url = url.replace("http", "ws", 1) + "/ws"
        self.pages: list[Page] = []
        self.instance = ""  # r1's, once created: the tokens name it

    def token(self, role: str, name: str, **kwargs) -> str:
        return self.services.issuer.mint(room=kwargs.pop("room", "r1"), identity=kwargs.pop("identity", name.lower()),
                                         name=name, role=role, ttl_s=600, instance=self.instance, **kwargs)

    async def connect(self, read: bool = True) -> Page:
        """A page; one that does not read has a small TCP receive buffer too (a slow link), so
        that what the server cannot send piles up in its outbox after a few hundred kilobytes."""
        connector = None if read else aiohttp.TCPConnector(socket_factory=_small_receive_buffer)
        http = aiohttp.ClientSession(connector=connector)
        page = Page(http, await http.ws_connect(self.ws_url, max_msg_size=0), read=read)
        self.pages.append(page)
        return page

    async def join(self, role: str, name: str, read: bool = True, **kwargs) -> Page:
        """A page joined (with its first offer received, when it reads)."""
        page = await self.connect(read=read)
        await page.send({"type": "join", "v": 1, "token": self.token(role, name, **kwargs)})
        if read:
            page.id = (await page.wait_type("joined"))["participant"]["id"]
            await page.wait_type("offer")
        return page

    def live(self):
        return self.services.rooms.live["r1"]

    async def present(self) -> set[str]:
        """Ids of the participants the registry lists in r1."""
        return {p.id for p in await self.services.registry.list_participants("r1")}


@pytest.fixture
async def sfu(aiohttp_client, tmp_path):
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[],
                          clinic_contact=CLINIC)
    services = build_services(config)
    client = await aiohttp_client(create_app(services))
    record = await services.registry.create_room("Consultation", "r1")
    server = Sfu(services, str(client.make_url("")).rstrip("/"))
    server.instance = record.instance
    yield server
    for page in server.pages:
        await page.close()


async def eventually(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await _value(condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.02)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


# --- joining ---------------------------------------------------------------------------------------------------

async def test_join_sends_joined_then_the_rooms_state_then_the_first_offer(sfu):
    doctor = await sfu.join("doctor", "Doctor")
    await doctor.send({"type": "annotate", "op": "add", "shape": {"kind": "arrow", "from": [0.1, 0.1],
                                                                   "to": [0.5, 0.5]}})
    shape = (await doctor.wait_type("annotation"))["shape"]
    patient = await sfu.join("patient", "Patient")
    first = patient.messages[:4]
    assert [m["type"] for m in first] == ["joined", "annotation-snapshot", "recording", "offer"], patient.types()
    joined, snapshot, recording, offer = first
    assert joined["v"] == 1 and joined["participant"]["id"] == patient.id
    assert joined["participant"]["role"] == "patient" and joined["participant"]["name"] == "Patient"
    assert [p["id"] for p in joined["participants"]] == [doctor.id]  # the others, not itself
    assert joined["room"]["id"] == "r1" and joined["room"]["contact"] == CLINIC
    assert joined["ice_servers"] == []  # no TURN and no servers configured
    assert snapshot["shapes"] == [shape]  # the drawing so far, for the late joiner
    assert recording == {"type": "recording", "state": "off"}
    assert offer["rev"] == 1 and offer["sdp"].startswith("v=0")
    # the others hear of the newcomer; the newcomer does not hear of itself
    joined_event = await doctor.wait_type("participant-joined")
    assert joined_event["participant"]["id"] == patient.id
    assert not patient.of_type("participant-joined")


async def test_the_first_to_join_is_told_of_no_one(sfu):
    page = await sfu.join("expert", "Expert")
    joined = page.messages[0]
    assert joined["type"] == "joined" and joined["participants"] == []
    assert await sfu.present() == {page.id}


async def test_a_second_join_is_bad_state_and_the_session_goes_on(sfu):
    page = await sfu.join("expert", "Expert")
    await page.send({"type": "join", "v": 1, "token": sfu.token("doctor", "Someone Else")})
    error = await page.wait_type("error")
    assert (error["code"], error["fatal"]) == ("bad_state", False)
    await page.send({"type": "ping"})
    await page.wait_type("pong")
    assert len(page.of_type("joined")) == 1 and await sfu.present() == {page.id}


@pytest.mark.parametrize("first", [b"\x00binary", "{not json", '{"type": "join", "v": "1", "token": "t"}'])
async def test_a_first_frame_that_is_no_valid_join_is_refused_with_the_servers_contact(sfu, first):
    page = await sfu.connect()
    if isinstance(first, bytes):
        await page.ws.send_bytes(first)
    else:
        await page.send(first)
    assert await page.wait_ended() == 4401
    [error] = page.messages  # the fatal error is all it gets
    assert (error["type"], error["code"], error["fatal"]) == ("error", "unauthorized", True)
    assert error["contact"] == CLINIC  # nothing verified: the server's contact, not a room's
    assert "r1" not in sfu.services.rooms.live


# --- negotiation -----------------------------------------------------------------------------------------------

async def test_a_client_that_never_answers_is_ended_and_the_room_is_told(sfu):
    sfu.services.config.answer_timeout_s = 60  # (a session takes the setting when it starts)
    other = await sfu.join("expert", "Other")
    sfu.services.config.answer_timeout_s = 0.5
    silent = await sfu.join("expert", "Silent")
    error = await silent.wait_type("error", timeout=10)
    assert (error["code"], error["fatal"]) == ("bad_state", True) and "no answer within 0.5 s" in error["message"]
    await silent.wait_ended()
    left = await other.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == silent.id)
    assert left["reason"] == "error"
    await eventually(lambda: silent.id not in sfu.live().sessions, what="the session removed")
    assert silent.id not in await sfu.present()


async def test_the_answer_timeouts_fatal_error_is_the_last_message(sfu):
    """docs/PROTOCOL.md: a fatal error is the last message (no `closed`), and a policy
    violation closes with 1008."""
    sfu.services.config.answer_timeout_s = 0.3
    silent = await sfu.join("expert", "Silent")
    code = await silent.wait_ended()
    assert silent.types()[-1] == "error" and silent.messages[-1]["fatal"], silent.types()
    assert code == 1008


@pytest.mark.slow
async def test_an_answer_in_time_stops_the_answer_clock(sfu):
    sfu.services.config.answer_timeout_s = 3.0  # (aiortc answers well within it, even on a busy machine)
    participant = SyntheticParticipant(sfu.url, sfu.token("patient", "Answers"))  # no tracks: answers only
    try:
        await participant.join()
        await participant.wait_for(lambda m: m["type"] == "offer")
        await eventually(lambda: participant.answers_sent >= 1, what="the answer sent")
        await asyncio.sleep(3.5)  # the clock started with the offer, before the answer: it would have run out
        assert not [m for m in participant.messages if m["type"] in ("error", "closed")], participant.messages
        assert participant.closed_reason is None and participant.id in await sfu.present()
    finally:
        await participant.close()


class HoldsItsFirstAnswer(SyntheticParticipant):
    """A real aiortc participant that answers its first offer only when told to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: Optional[dict] = None

    async def _answer(self, offer: dict) -> None:
        if offer["rev"] == 1:
            self.held = offer
            return
        await super()._answer(offer)

    async def answer_now(self) -> None:
        assert self.held is not None
        await super()._answer(self.held)


async def test_one_offer_at_a_time_and_the_next_once_answered(sfu):
    watcher = HoldsItsFirstAnswer(sfu.url, sfu.token("expert", "Watcher"))  # offered its own camera's slots
    publisher = SyntheticParticipant(sfu.url, sfu.token("patient", "Patient"), audio=ToneAudioTrack(),
                                     video=PatternVideoTrack(seed=1))
    try:
        await watcher.join()
        await watcher.wait_for(lambda m: m["type"] == "offer")
        await publisher.join()  # its tracks need slots the watcher's first offer lacks
        await publisher.wait_for(lambda m: m["type"] == "offer")
        session = sfu.live().sessions[watcher.id]
        offers = lambda: [m for m in watcher.messages if m["type"] == "offer"]  # noqa: E731
        await eventually(lambda: session._renegotiate or len(offers()) > 1, what="a renegotiation asked for")
        await asyncio.sleep(0.3)
        assert [m["rev"] for m in offers()] == [1]  # none while one waits
        await watcher.answer_now()
        second = await watcher.wait_for(lambda m: m["type"] == "offer" and m["rev"] == 2)
        assert publisher.id in {t["participant"] for t in second["tracks"].values() if t}
        assert not [m for m in watcher.messages if m["type"] == "error"], watcher.messages
    finally:
        for participant in (watcher, publisher):
            await participant.close()


@pytest.mark.slow
async def test_a_watcher_alone_is_offered_nothing_until_someone_publishes(sfu):
    """A link that may only subscribe, first in the room: an offer then would have no media
    section, which no answer can satisfy (the session used to end at the answer timeout). It
    waits, and the first publisher's arrival brings the offer."""
    sfu.services.config.answer_timeout_s = 0.5
    watcher = await sfu.connect()
    await watcher.send({"type": "join", "v": 1, "token": sfu.token("expert", "Watcher", permissions=["subscribe"])})
    await watcher.wait_type("joined")
    await asyncio.sleep(1.5)  # three answer timeouts: an offer sent now would have ended the session
    assert "offer" not in watcher.types() and "error" not in watcher.types() and not watcher.ended.is_set()
    sfu.services.config.answer_timeout_s = 10.0
    doctor = SyntheticParticipant(sfu.url, sfu.token("doctor", "Doctor"), audio=ToneAudioTrack(),
                                  video=PatternVideoTrack(seed=2))
    try:
        await doctor.join()
        offer = await watcher.wait_type("offer", timeout=20)  # once the doctor's tracks arrive
        assert "m=audio" in offer["sdp"] and "m=video" in offer["sdp"] and offer["publish"] is None
    finally:
        await doctor.close()


# --- messages after joining ------------------------------------------------------------------------------------

async def test_mute_updates_everyone_the_sender_included_and_the_registry(sfu):
    doctor = await sfu.join("doctor", "Doctor")
    patient = await sfu.join("patient", "Patient")
    await patient.send({"type": "mute", "kind": "video", "muted": True})
    for page in (doctor, patient):
        update = await page.wait_type("participant-updated")
        assert update["participant"]["id"] == patient.id
        assert update["participant"]["muted"] == {"audio": False, "video": True}
    [record] = [p for p in await sfu.services.registry.list_participants("r1") if p.id == patient.id]
    assert record.muted == {"audio": False, "video": True}


async def test_leave_closes_with_left_and_the_room_hears_why(sfu):
    doctor = await sfu.join("doctor", "Doctor")
    patient = await sfu.join("patient", "Patient")
    await patient.send({"type": "leave"})
    assert await patient.wait_ended() == 1000
    assert patient.messages[-1] == {"type": "closed", "reason": "left"}
    left = await doctor.wait_for(lambda m: m["type"] == "participant-left")
    assert (left["participant_id"], left["reason"]) == (patient.id, "left")
    assert await sfu.present() == {doctor.id}


async def test_a_message_that_fails_in_its_handler_is_an_internal_error_and_the_session_goes_on(sfu, caplog):
    page = await sfu.join("doctor", "Doctor")

    def broken(*args, **kwargs):
        raise RuntimeError("a fault")

    sfu.live().board.snapshot = broken  # the handler of annotations-get fails
    caplog.set_level(logging.ERROR, logger="signalling.session")
    await page.send({"type": "annotations-get"})
    error = await page.wait_type("error")
    assert (error["code"], error["fatal"]) == ("internal", False) and "annotations-get" in error["message"]
    await page.send({"type": "ping"})
    await page.wait_type("pong")
    assert any("handling annotations-get failed" in r.getMessage() for r in caplog.records)


# --- the flood guard ----------------------------------------------------------------------------------------------

async def handled_all_sent(page: Page, marker_every: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until the session has handled everything sent so far: an `annotations-get` (dropped
    too while the bucket is empty, so sent until one is answered) comes back after it."""
    deadline = time.monotonic() + timeout
    before = len(page.of_type("annotation-snapshot"))  # (one came with `joined`)
    while len(page.of_type("annotation-snapshot")) == before:
        assert time.monotonic() < deadline, page.types()[-5:]
        await page.send({"type": "annotations-get"})
        try:
            await page.wait_for(lambda m: m["type"] == "annotation-snapshot" and len(
                page.of_type("annotation-snapshot")) > before, timeout=marker_every)
        except TimeoutError:
            pass


async def test_a_burst_up_to_the_limit_is_answered_in_full(sfu):
    page = await sfu.join("expert", "Expert")
    for _ in range(99):
        await page.send({"type": "ping"})
    await page.send({"type": "annotations-get"})  # the 100th: the guard's burst
    await page.wait_for(lambda m: m["type"] == "annotation-snapshot" and len(page.of_type("annotation-snapshot")) == 2)
    assert len(page.of_type("pong")) == 99 and not page.of_type("error")


async def test_over_the_limit_messages_are_dropped_with_one_error_per_episode(sfu):
    page = await sfu.join("expert", "Expert")
    for _ in range(400):
        await page.send({"type": "ping"})
    await handled_all_sent(page)
    pongs = len(page.of_type("pong"))
    # the burst of 100, and what the 50/s refill admitted while they came in: far from all
    assert 100 <= pongs < 300, pongs
    [error] = page.of_type("error")
    assert (error["code"], error["fatal"]) == ("rate_limited", False)
    assert not page.ended.is_set() and page.id in sfu.live().sessions


async def test_binary_frames_count_against_the_same_limit(sfu):
    page = await sfu.join("expert", "Expert")
    for _ in range(400):
        await page.ws.send_bytes(b"\x01")
    await handled_all_sent(page)
    refused = [m["code"] for m in page.of_type("error")]
    assert refused.count("rate_limited") == 1
    assert 100 <= refused.count("binary_not_supported") < 300, len(refused)


@pytest.mark.slow
async def test_a_flood_that_goes_on_ends_the_session_with_a_fatal_error(sfu):
    other = await sfu.join("doctor", "Doctor")
    flooder = await sfu.join("expert", "Flooder")
    started = time.monotonic()
    while not flooder.ended.is_set() and time.monotonic() - started < 20:
        for _ in range(20):
            await flooder.send({"type": "ping"})
        await asyncio.sleep(0.05)  # ~400 a second, well over 50
    assert await flooder.wait_ended(timeout=5) == 1008
    lasted = time.monotonic() - started
    assert 5 <= lasted < 15, lasted  # ended after the flood's 5 s, not at once, and not never
    errors = [(e["code"], e["fatal"]) for e in flooder.of_type("error")]
    # told once as the flood starts (again only if the test itself stalled over a second), then fatally
    assert errors[0] == ("rate_limited", False) and errors[-1] == ("rate_limited", True), errors
    assert set(errors[:-1]) == {("rate_limited", False)}
    assert flooder.messages[-1]["type"] == "error"  # the fatal error is the last message: no `closed`
    left = await other.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == flooder.id)
    assert left["reason"] == "error"
    assert await sfu.present() == {other.id}


@pytest.mark.slow
async def test_bursts_with_quiet_gaps_are_never_cut_off(sfu):
    # each burst is an episode of its own: more than 5 s of bursts in all is not a flood that went on
    page = await sfu.join("expert", "Bursty")
    for burst in range(4):  # 6 s from the first to the last, 2 s apart (the guard's quiet time: 1 s)
        if burst:
            await asyncio.sleep(2.0)
        for _ in range(150):
            await page.send({"type": "ping"})
    await handled_all_sent(page)
    errors = page.of_type("error")
    assert all((e["code"], e["fatal"]) == ("rate_limited", False) for e in errors), errors
    assert len(errors) >= 2  # a burst after a quiet gap is told again
    assert not page.ended.is_set() and page.id in sfu.live().sessions


async def test_bursts_the_flood_guard_admits_do_not_disconnect_pages_that_read(sfu):
    """Five pages each send 100 mutes (within the flood guard's burst): ~500 broadcasts to every
    page. A session handled its client's whole buffered burst before any outbox writer ran, so
    ~400 piled up in outboxes of 256 and everyone, pages that read included, was dropped."""
    pages = [await sfu.join("expert", f"Expert {i}") for i in range(5)]
    for page in pages:
        for k in range(100):
            await page.send({"type": "mute", "kind": "audio", "muted": k % 2 == 0})
    for page in pages:
        await page.wait_for(lambda m, page=page: len(page.of_type("participant-updated")) == 500, timeout=10)
        assert not page.ended.is_set()


# --- a client that stops reading ------------------------------------------------------------------------------

def stroke(seed: int) -> dict:
    """A 2000-point stroke (~40 KB), the largest one message may add."""
    points = [[round(((k * 7919 + seed * 104729) % 99991) / 99991, 5), round(k / 2000, 5)] for k in range(2000)]
    return {"type": "annotate", "op": "add", "shape": {"kind": "freehand", "anchor": "screen", "points": points}}


async def stall(sfu: Sfu) -> tuple[Page, Page, str]:
    """A doctor who stops reading, with its outbox made to overflow: the board is drawn nearly
    full (9 strokes, ~300 KB a snapshot) and the doctor asks for it 90 times, far more than an
    unread socket and the kernel's buffers take (a few MB), so its writer blocks; then three
    others' mutes add 300 messages to its queue of 256. Returns a page that reads, the stalled
    page and its participant id."""
    reader = await sfu.join("patient", "Patient")
    helpers = [await sfu.join("expert", f"Expert {i}") for i in range(2)]
    stalled = await sfu.join("doctor", "Doctor", read=False)
    await eventually(lambda: len(sfu.live().sessions) == 4, what="four joined")
    stalled_id = next(pid for pid, s in sfu.live().sessions.items() if s.joined_participant().role == "doctor")
    for author in (*helpers, stalled):
        for seed in range(3):  # 3 x 9 of the annotation limiter's burst of 30, each author
            await author.send(stroke(len(sfu.live().board.snapshot()["shapes"]) + seed))
    await helpers[-1].wait_for(lambda m: len(helpers[-1].of_type("annotation")) == 9)
    for _ in range(90):  # within the flood guard's burst (100 with the strokes): none dropped
        await stalled.send({"type": "annotations-get"})
    # one burst at a time, so the pages that read take each in full
    for done, page in enumerate((reader, *helpers), start=1):
        for k in range(100):
            await page.send({"type": "mute", "kind": "audio", "muted": k % 2 == 0})
        await reader.wait_for(lambda m, done=done: len(reader.of_type("participant-updated")) >= 100 * done)
    return reader, stalled, stalled_id


async def test_a_client_that_stops_reading_is_given_up_when_its_outbox_fills(sfu, caplog):
    caplog.set_level(logging.WARNING, logger="signalling.outbox")
    reader, stalled, stalled_id = await stall(sfu)
    try:
        left = await reader.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == stalled_id,
                                     timeout=6)
        assert left["reason"] == "error"  # given up, not a vanished client
        assert any("outbox full" in r.getMessage() for r in caplog.records)
        # the others are not held up by it
        await reader.send({"type": "ping"})
        await reader.wait_type("pong", timeout=5)
        assert len(reader.of_type("participant-updated")) == 300 and not reader.ended.is_set()
    finally:
        await forget_stuck_session(sfu, stalled, stalled_id)


@pytest.mark.slow
async def test_a_client_that_stops_reading_leaves_the_room_and_may_rejoin(sfu):
    """After an outbox overflow the closing handshake never completes on an unread socket (or
    is cancelled with aiohttp's shared drain waiter): the session drops the connection and
    still leaves the room."""
    reader, stalled, stalled_id = await stall(sfu)
    try:
        left = await reader.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == stalled_id,
                                     timeout=6)  # the outbox's flush is bounded at 2 s
        assert left["reason"] == "error"
        assert stalled_id not in await sfu.present()
        again = await sfu.join("doctor", "Doctor")  # the same identity, from a page that reads
        assert again.id in await sfu.present()
    finally:
        await forget_stuck_session(sfu, stalled, stalled_id)


async def forget_stuck_session(sfu: Sfu, stalled: Page, stalled_id: str) -> None:
    """Let the stalled client go; if its session is stuck in the room (as it was before the closing
    handshake was bounded), take it out by hand so that the app's shutdown can close the others."""
    stalled.vanish()
    live = sfu.services.rooms.live.get("r1")
    try:
        await eventually(lambda: live is None or stalled_id not in live.sessions, timeout=1)
    except TimeoutError:
        assert live is not None
        live.sessions.pop(stalled_id, None)
        await live.media.remove_peer(stalled_id)
        await sfu.services.registry.remove_participant("r1", stalled_id)


# --- a client that vanishes -------------------------------------------------------------------------------------

async def test_a_client_that_vanishes_is_cleaned_up_and_the_room_told(sfu):
    doctor = await sfu.join("doctor", "Doctor")
    patient = await sfu.join("patient", "Patient")
    assert patient.id in sfu.live().media.peers
    patient.vanish()
    left = await doctor.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == patient.id)
    assert left["reason"] == "disconnected"
    assert await sfu.present() == {doctor.id}
    assert set(sfu.live().sessions) == {doctor.id} and set(sfu.live().media.peers) == {doctor.id}
    # the last one vanishing ends the call
    doctor.vanish()
    await eventually(lambda: "r1" not in sfu.services.rooms.live, what="the call ended")
    assert await sfu.present() == set()


async def test_clients_that_vanish_while_joining_leave_nothing_behind(sfu):
    for i in range(6):
        page = await sfu.connect()
        await page.send({"type": "join", "v": 1, "token": sfu.token("patient", f"Patient {i}")})
        if i % 2:
            await asyncio.sleep(0.005 * i)  # at different points of the join
        page.vanish()
    await eventually(lambda: "r1" not in sfu.services.rooms.live, what="every half-joined session cleaned up")
    assert await sfu.present() == set()
    # and the room takes new people as before
    page = await sfu.join("patient", "Patient 0")
    assert await sfu.present() == {page.id}
    # no session's clean-up was cut short: the server still ends every call cleanly
    await asyncio.wait_for(sfu.services.rooms.shutdown(), 10)
    assert sfu.services.rooms.live == {}
