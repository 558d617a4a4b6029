"""A synthetic participant: a real aiortc peer speaking the signalling protocol.

Used by the tests and the load-test tool. It answers the server's offers,
publishes the tracks it is given on the mids the server names, and decodes
what it receives, counting frames per remote participant.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, cast

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy

logger = logging.getLogger(__name__)


class _Picture(Protocol):
    """A decoded video frame as used here: av's VideoFrame, or loadtest.receiver's DeliveredFrame."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


@dataclass
class ReceivedTrack:
    mid: str
    kind: str
    frames: int = 0
    first_frame_at: Optional[float] = None
    last_frame_at: Optional[float] = None
    width: int = 0
    height: int = 0


@dataclass
class SyntheticParticipant:
    base_url: str
    token: str
    audio: Optional[MediaStreamTrack] = None
    video: Optional[MediaStreamTrack] = None
    messages: list[dict] = field(default_factory=list)
    participant: Optional[dict] = None
    tracks_map: dict[str, Optional[dict]] = field(default_factory=dict)
    received: dict[str, ReceivedTrack] = field(default_factory=dict)
    closed_reason: Optional[str] = None

    def __post_init__(self) -> None:
        self.pc: Optional[RTCPeerConnection] = None
        self._http: Optional[aiohttp.ClientSession] = None
        self.ws: Optional[aiohttp.ClientWebSocketResponse] = None
        self._reader: Optional[asyncio.Task] = None
        self._consumers: list[asyncio.Task] = []
        self._event = asyncio.Condition()
        self.answers_sent = 0

    # --- connecting ------------------------------------------------------------------

    async def join(self, timeout: float = 10.0) -> dict:
        self._http = aiohttp.ClientSession()
        ws_url = self.base_url.replace("http", "ws", 1).rstrip("/") + "/ws"
        self.ws = await self._http.ws_connect(ws_url)
        await self.ws.send_json({"type": "join", "v": 1, "token": self.token})
        self._reader = asyncio.ensure_future(self._read())
        joined = await self.wait_for(lambda m: m["type"] in ("joined", "error"), timeout)
        if joined["type"] == "error":
            raise RuntimeError(f"join refused: {joined}")
        self.participant = joined["participant"]
        return joined

    @property
    def id(self) -> str:
        assert self.participant is not None, "join() first"
        return self.participant["id"]

    async def _read(self) -> None:
        assert self.ws is not None  # join() connects before it starts the reader
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            if message["type"] == "offer":
                await self._answer(message)
            elif message["type"] == "tracks":
                self.tracks_map.update(message["tracks"])
            elif message["type"] == "closed":
                self.closed_reason = message["reason"]
            async with self._event:
                self.messages.append(message)
                self._event.notify_all()
        async with self._event:
            self._event.notify_all()

    async def wait_for(self, predicate, timeout: float = 10.0, start: int = 0) -> dict:
        """The first message (from index `start`) matching predicate, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        async with self._event:
            while True:
                for message in self.messages[start:]:
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching message in {timeout} s; got {[m['type'] for m in self.messages]}")
                try:
                    await asyncio.wait_for(self._event.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    def _new_peer_connection(self) -> RTCPeerConnection:
        # max-bundle: with aiortc's default (balanced) policy, an answerer given
        # two m-lines of one kind in its first offer leaves the second on a
        # transport that never connects.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        pc.on("track", self._on_track)
        return pc

    async def _answer(self, offer: dict) -> None:
        if self.pc is None:
            self.pc = self._new_peer_connection()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        publish = offer.get("publish") or {}
        for transceiver in self.pc.getTransceivers():
            track = {"audio": self.audio, "video": self.video}.get(transceiver.kind)
            if transceiver.mid == publish.get(transceiver.kind) and track is not None:
                if transceiver.sender.track is None:
                    transceiver.sender.replaceTrack(track)
                transceiver.direction = "sendonly"
        self.tracks_map.update(offer.get("tracks") or {})
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        sdp = self.answer_to_send(self.pc.localDescription.sdp)
        await self.send({"type": "answer", "rev": offer["rev"], "sdp": sdp})
        self.answers_sent += 1

    def answer_to_send(self, local_sdp: str) -> str:
        """The answer as sent: aiortc's local description (rebuilt with the ICE candidates; it drops the
        attributes it does not parse, which a subclass that added some writes back here)."""
        return local_sdp

    def _on_track(self, track: MediaStreamTrack) -> None:
        assert self.pc is not None  # the track came from it
        transceiver = next(t for t in self.pc.getTransceivers() if t.receiver.track is track)
        mid = transceiver.mid
        assert mid is not None  # negotiated by the offer that brought the track
        received = ReceivedTrack(mid=mid, kind=track.kind)
        self.received[mid] = received
        self._consumers.append(asyncio.ensure_future(self._consume(track, received)))

    async def _consume(self, track: MediaStreamTrack, received: ReceivedTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                received.frames += 1
                received.first_frame_at = received.first_frame_at or now
                received.last_frame_at = now
                if track.kind == "video":
                    # aiortc types recv() as any frame or packet; a video track's are pictures
                    picture = cast(_Picture, frame)
                    received.width, received.height = picture.width, picture.height
                self.on_frame(frame, received)
        except MediaStreamError:
            pass

    def on_frame(self, frame, received: ReceivedTrack) -> None:
        """Called for every frame received, after the counters; for subclasses that look closer."""

    # --- observing what arrives ---------------------------------------------------------

    def frames_from(self, participant_id: str, kind: str) -> int:
        """Frames decoded so far from this participant's media of this kind."""
        total = 0
        for mid, info in self.tracks_map.items():
            if info and info["participant"] == participant_id and info["kind"] == kind and mid in self.received:
                total += self.received[mid].frames
        return total

    async def wait_for_frames(self, participant_id: str, kind: str, count: int, timeout: float = 10.0) -> float:
        """Seconds until `count` more frames from that participant were decoded."""
        start = time.monotonic()
        base = self.frames_from(participant_id, kind)
        while self.frames_from(participant_id, kind) < base + count:
            if time.monotonic() - start > timeout:
                raise TimeoutError(
                    f"{self.participant and self.participant['name']}: only "
                    f"{self.frames_from(participant_id, kind) - base}/{count} {kind} frames from {participant_id} "
                    f"in {timeout} s (tracks {self.tracks_map}, "
                    f"received { {m: r.frames for m, r in self.received.items()} })"
                )
            await asyncio.sleep(0.02)
        return time.monotonic() - start

    # --- sending and leaving ---------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None, "join() first"
        await self.ws.send_str(json.dumps(message))

    async def close(self, leave: bool = True) -> None:
        if self.ws is not None and not self.ws.closed:
            if leave:
                try:
                    await self.send({"type": "leave"})
                except ConnectionError:
                    pass
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.pc is not None:
            await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
