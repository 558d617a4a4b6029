"""Bad input, one test each: a clear typed error or a closed socket, and the
rest of the room keeps its media."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import jwt
import pytest

from signalling.protocol import MAX_MESSAGE_BYTES

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds


class RawClient:
    """A bare WebSocket client for sending what a well-behaved page never would."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    async def __aenter__(self) -> "RawClient":
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(self.base_url.replace("http", "ws", 1) + "/ws", max_msg_size=0)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        await self.http.close()

    async def send(self, message) -> None:
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def next(self, msg_type: str | None = None, timeout: float = 5.0) -> dict:
        """Next message (of that type); raises if the socket closes first."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket ended: {msg.type} code={self.ws.close_code}")
            message = json.loads(msg.data)
            if msg_type is None or message["type"] == msg_type:
                return message

    async def closed_code(self, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return self.ws.close_code
        raise TimeoutError("socket still open")

    async def join(self, token: str) -> dict:
        await self.send({"type": "join", "v": 1, "token": token})
        return await self.next("joined")


@pytest.fixture
async def call(sfu):
    """A patient and a doctor in a running call; `still_flowing()` checks their media."""
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)

    async def still_flowing() -> None:
        await doctor.wait_for_frames(patient.id, "video", 10, timeout=5)
        await patient.wait_for_frames(doctor.id, "video", 10, timeout=5)

    sfu.still_flowing = still_flowing
    return sfu


async def expect_fatal(client: RawClient, code: str, ws_code: int) -> None:
    error = await client.next("error")
    assert error["code"] == code and error["fatal"], error
    assert await client.closed_code() == ws_code


# --- messages after joining -----------------------------------------------------------

async def test_malformed_json_gets_an_error_and_the_session_goes_on(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        await c.send("{not json")
        assert (await c.next("error"))["code"] == "bad_json"
        await c.send("[1, 2, 3]")
        assert (await c.next("error"))["code"] == "bad_json"
        await c.send({"type": "mute", "kind": "audio"})
        assert (await c.next("error"))["code"] == "bad_message"
        await c.send({"type": "answer", "rev": True, "sdp": "x"})
        assert (await c.next("error"))["code"] == "bad_message"
        await c.send({"type": "ping"})
        assert (await c.next())["type"] == "pong"
    await call.still_flowing()


async def test_unknown_message_type(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        await c.send({"type": "drop-table"})
        error = await c.next("error")
        assert error["code"] == "unknown_type" and not error["fatal"]
        await c.send({"type": "ping"})
        await c.next("pong")
    await call.still_flowing()


async def test_binary_frames_are_refused(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        await c.ws.send_bytes(b"\x00\x01garbage")
        assert (await c.next("error"))["code"] == "binary_not_supported"
    await call.still_flowing()


async def test_oversized_message_closes_with_1009(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        await c.send({"type": "ping", "pad": "x" * (MAX_MESSAGE_BYTES + 10)})
        await expect_fatal(c, "too_large", 1009)
    await call.still_flowing()


async def test_huge_frame_over_the_hard_limit_is_cut_off(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        await c.send("x" * (2 * 1024 * 1024))
        assert await c.closed_code() == 1009
    await call.still_flowing()


async def test_message_flood_is_rate_limited(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        for _ in range(1000):
            await c.send({"type": "ping"})
        error = await c.next("error")
        assert error["code"] == "rate_limited" and not error["fatal"]
        # the messages over the limit were dropped, not queued: far fewer pongs than pings
        await asyncio.sleep(0.5)
    await call.still_flowing()
    live = call.services.rooms.live["r1"]
    assert len(live.sessions) == 2  # the flooder is gone with its socket; the call is not


async def test_view_sizes_reach_the_downtrack_and_bad_ones_are_refused(call):
    patient_id = next(pid for pid, s in call.services.rooms.live["r1"].sessions.items()
                      if s.joined_participant().role == "patient")
    async with RawClient(call.base_url) as c:
        joined = await c.join(call.token("expert", permissions=["subscribe"]))
        expert_id = joined["participant"]["id"]
        for bad in ({"p-1": {"width": -1, "height": 10}}, {"p-1": {"width": 10}}, {"p-1": [10, 10]},
                    {"p-1": {"width": True, "height": 10}}, {"": {"width": 1, "height": 1}},
                    {f"p-{i}": {"width": 1, "height": 1} for i in range(40)}, ["p-1"]):
            await c.send({"type": "view", "videos": bad})
            error = await c.next("error")
            assert error["code"] == "bad_message" and not error["fatal"], (bad, error)
        # someone who already left (or never was) is passed over; the rest is taken
        await c.send({"type": "view", "videos": {"p-gone": {"width": 10, "height": 10},
                                                 patient_id: {"width": 320, "height": 180}}})
        await c.send({"type": "ping"})
        await c.next("pong")
        summary = call.services.rooms.live["r1"].media.forwarding_summary()
        assert summary[expert_id]["receiving"][f"{patient_id}:video"]["view"] == [320, 180]
    await call.still_flowing()


async def test_answer_with_garbage_sdp(call):
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert"))
        offer = await c.next("offer")
        await c.send({"type": "answer", "rev": offer["rev"], "sdp": "v=0\r\nthis is not sdp\r\n"})
        error = await c.next("error")
        assert error["code"] == "bad_sdp" and not error["fatal"], error
        await c.send({"type": "answer", "rev": offer["rev"], "sdp": "\x00" * 1000})
        assert (await c.next("error"))["code"] == "bad_sdp"
        await c.send({"type": "answer", "rev": offer["rev"] + 7, "sdp": "v=0"})
        assert (await c.next("error"))["code"] == "bad_state"
    await call.still_flowing()


# --- tokens and joining -----------------------------------------------------------------

async def test_an_oversized_first_frame_is_refused_before_joining(call):
    # aiohttp refuses it from the frame header (64 KiB cap from the first frame on); the
    # socket still hears why, in the protocol's terms.
    async with RawClient(call.base_url) as c:
        await c.send({"type": "join", "v": 1, "token": "x" * MAX_MESSAGE_BYTES})
        await expect_fatal(c, "too_large", 1009)
    await call.still_flowing()


async def test_first_message_must_be_join(call):
    async with RawClient(call.base_url) as c:
        await c.send({"type": "ping"})
        await expect_fatal(c, "unauthorized", 4401)


async def test_missing_token(call):
    async with RawClient(call.base_url) as c:
        await c.send({"type": "join", "v": 1, "token": ""})
        await expect_fatal(c, "unauthorized", 4401)


async def test_expired_token(call):
    # correctly signed with the server's secret, but expired a minute ago (beyond the 5 s leeway)
    claims = jwt.decode(call.token("doctor"), options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 60
    secret = (call.services.config.data_dir / "token.secret").read_text().strip()
    expired = jwt.encode(claims, secret, algorithm="HS256")
    async with RawClient(call.base_url) as c:
        await c.send({"type": "join", "v": 1, "token": expired})
        await expect_fatal(c, "token_expired", 4401)
    await call.still_flowing()


async def test_forged_token(call):
    claims = jwt.decode(call.token("doctor"), options={"verify_signature": False})
    forged = jwt.encode(claims, "not-the-server-secret-but-32-bytes-long", algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token in (forged, unsigned, "eyJhbGciOi.garbage.token"):
        async with RawClient(call.base_url) as c:
            await c.send({"type": "join", "v": 1, "token": token})
            await expect_fatal(c, "unauthorized", 4401)
    await call.still_flowing()


async def test_token_for_another_room(call):
    async with RawClient(call.base_url) as c:
        await c.send({"type": "join", "v": 1, "token": call.token("doctor", room="some-other-room")})
        await expect_fatal(c, "wrong_room", 4403)
    await call.still_flowing()


async def test_unsupported_protocol_version(call):
    async with RawClient(call.base_url) as c:
        await c.send({"type": "join", "v": 99, "token": call.token("doctor")})
        await expect_fatal(c, "bad_message", 1008)


async def test_join_timeout(call):
    call.services.config.join_timeout_s = 0.3
    async with RawClient(call.base_url) as c:
        await expect_fatal(c, "unauthorized", 4401)


async def test_trainer_token_cannot_join_a_live_call(call):
    async with RawClient(call.base_url) as c:
        await c.send({"type": "join", "v": 1, "token": call.token("trainer")})
        await expect_fatal(c, "forbidden", 4403)


# --- permissions -------------------------------------------------------------------------

async def test_participant_without_publish_permission_cannot_send_media(call):
    viewer = call.participant("expert", permissions=["subscribe"])  # has a camera, may not publish
    await viewer.join()
    offer = await viewer.wait_for(lambda m: m["type"] == "offer")
    assert offer["publish"] is None
    # the viewer's aiortc peer answered; it sees the others...
    await viewer.wait_for_frames(call.participants[0].id, "video", 5)
    # ...and a hand-made answer that tries to send on a receive slot is refused
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", name="Sneaky", permissions=["subscribe"]))
        offer = await c.next("offer")
        assert offer["publish"] is None
        await c.send({"type": "answer", "rev": offer["rev"], "sdp": _answer_sending_everything(offer["sdp"])})
        error = await c.next("error")
        assert error["code"] == "forbidden", error
    await call.still_flowing()


def _answer_sending_everything(offer_sdp: str) -> str:
    """The offer turned into an answer-shaped SDP that claims to send on every m-line."""
    lines = []
    for line in offer_sdp.splitlines():
        if line in ("a=sendonly", "a=recvonly", "a=inactive"):
            line = "a=sendrecv"
        if line.startswith("a=setup:"):
            line = "a=setup:active"
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


async def test_kick_needs_moderate_permission(call):
    patient, doctor = call.participants
    async with RawClient(call.base_url) as c:
        await c.join(call.token("expert", permissions=["subscribe"]))
        await c.send({"type": "kick", "participant_id": doctor.id})
        error = await c.next("error")
        assert error["code"] == "forbidden" and not error["fatal"]
    await call.still_flowing()
    # the doctor (moderate) may
    await doctor.send({"type": "kick", "participant_id": patient.id})
    await patient.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "kicked")
    await doctor.wait_for(lambda m: m["type"] == "participant-left" and m["reason"] == "kicked")
