"""The browser's side of one MediaPeer (media/peer.py), with no signalling in between: a real
aiortc peer connection on loopback that answers the server's offers as a page does
(publishing on the mids the offer names, receiving the rest) and counts what it decodes
per mid. For tests of the media plane on its own (tests/media/test_room.py, test_peer.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Optional

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy

from loadtest.sources import PatternVideoTrack, ToneAudioTrack
from media.peer import MediaPeer


async def eventually(condition: Callable[[], object], timeout: float = 10.0, what: str = "the condition") -> None:
    """Wait until `condition()` is true (polled), failing after `timeout` seconds: generous, so
    that a busy 2-core machine does not fail a test that would pass on a quiet one."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


class BrowserPeer:
    """An aiortc peer connection answering a MediaPeer's offers (max-bundle, no ICE servers)."""

    def __init__(self, *, publish: bool = False, seed: int = 0) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        # small pictures: cheap to encode and decode on a busy machine
        self.audio: Optional[MediaStreamTrack] = ToneAudioTrack() if publish else None
        self.video: Optional[MediaStreamTrack] = (PatternVideoTrack(width=160, height=120, seed=seed)
                                                  if publish else None)
        self.frames: dict[str, int] = {}  # mid -> frames decoded from what arrives on it
        self.offer = ""  # the last offer answered
        self._consumers: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    async def answer(self, offer_sdp: str, publish: Optional[dict[str, Optional[str]]]) -> str:
        """The answer a page sends: sending its own tracks on the `publish` mids only."""
        self.offer = offer_sdp
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():
            track = {"audio": self.audio, "video": self.video}.get(transceiver.kind)
            if publish and track is not None and transceiver.mid == publish.get(transceiver.kind):
                if transceiver.sender.track is None:
                    transceiver.sender.replaceTrack(track)
                transceiver.direction = "sendonly"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def negotiate(self, peer: MediaPeer, edit: Callable[[str, str], str] = lambda answer, offer: answer) -> str:
        """One offer/answer round with `peer` (the server's side); `edit(answer, offer)` changes the
        answer as sent (what a browser answers that aiortc does not). The offer, as sent."""
        offer = await peer.create_offer()
        answer = await self.answer(offer, peer.publish_mids())
        await peer.apply_answer(edit(answer, offer))
        return offer

    async def unreachable_answer(self, offer_sdp: str) -> str:
        """An answer no connectivity check can ever reach: this browser's answer as created, never
        set (so it gathers no candidate and checks nothing), saying no candidate will come."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        answer = (await self.pc.createAnswer()).sdp
        assert "a=candidate:" not in answer
        return answer.replace("\r\na=mid:", "\r\na=end-of-candidates\r\na=mid:")

    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
        assert mid is not None
        self.frames.setdefault(mid, 0)
        self._consumers.append(asyncio.ensure_future(self._consume(mid, track)))

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.frames[mid] += 1
        except MediaStreamError:
            pass

    def frames_on(self, mids: dict[str, Optional[dict]], participant_id: str, kind: str) -> int:
        """Frames decoded on the mids that `mids` (a track map) says carry that participant's `kind`."""
        return sum(self.frames.get(mid, 0) for mid, info in mids.items()
                   if info == {"participant": participant_id, "kind": kind})

    async def close(self) -> None:
        await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()
