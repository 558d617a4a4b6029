"""A MediaRoom (media/room.py) with a real aiortc "browser" for each of its peers, on loopback,
and what the room told its control plane (RoomMediaEvents), recorded. No signalling: the
test plays the control plane, negotiating a participant when it decides to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

from media.ice import IceConfig
from media.peer import MediaPeer
from media.room import MediaRoom

from .browser_peer import BrowserPeer, eventually


class RecordedEvents:
    """RoomMediaEvents that keeps every call, in order, as (name, *arguments)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def renegotiation_needed(self, participant_id: str) -> None:
        self.calls.append(("renegotiation_needed", participant_id))

    def tracks_changed(self, participant_id: str, changes: dict[str, Optional[dict]]) -> None:
        self.calls.append(("tracks_changed", participant_id, changes))

    def connection_failed(self, participant_id: str) -> None:
        self.calls.append(("connection_failed", participant_id))

    def video_paused(self, subscriber_id: str, publisher_id: str, paused: bool) -> None:
        self.calls.append(("video_paused", subscriber_id, publisher_id, paused))

    def publisher_layers(self, publisher_id: str, rids: tuple[str, ...]) -> None:
        self.calls.append(("publisher_layers", publisher_id, rids))

    def of(self, name: str, participant_id: Optional[str] = None) -> list[tuple[Any, ...]]:
        """The arguments of each call of `name` (for `participant_id` only, if given)."""
        return [call[1:] for call in self.calls
                if call[0] == name and (participant_id is None or call[1] == participant_id)]

    def clear(self) -> None:
        self.calls.clear()


class MediaCall:
    """One room, its peers and their browsers; `close()` ends them all."""

    def __init__(self, **room_options: Any) -> None:
        self.events = RecordedEvents()
        self.room = MediaRoom("room-1", IceConfig(), self.events, **room_options)
        self.browsers: dict[str, BrowserPeer] = {}
        self._closing: list[BrowserPeer] = []

    def join(self, participant_id: str, *, publish: bool, subscribe: bool = True, seed: int = 0) -> MediaPeer:
        """A participant arrives: the room makes its peer (nothing is negotiated yet)."""
        peer = self.room.create_peer(participant_id, publish=publish, subscribe=subscribe)
        browser = BrowserPeer(publish=publish, seed=seed)
        self.browsers[participant_id] = browser
        self._closing.append(browser)
        return peer

    def peer(self, participant_id: str) -> MediaPeer:
        return self.room.peers[participant_id]

    async def negotiate(self, participant_id: str, edit: Callable[[str, str], str] = lambda answer, offer: answer
                        ) -> str:
        """One offer/answer round for that participant (what its session does on renegotiation_needed)."""
        return await self.browsers[participant_id].negotiate(self.peer(participant_id), edit)

    async def publishing(self, participant_id: str, seed: int = 0, **negotiate: Any) -> MediaPeer:
        """A participant that publishes and subscribes joins, negotiates, and its tracks start."""
        peer = self.join(participant_id, publish=True, seed=seed)
        await self.negotiate(participant_id, **negotiate)
        await eventually(lambda: set(peer.published) == {"audio", "video"}, what=f"{participant_id}'s tracks started")
        return peer

    def frames(self, subscriber_id: str, publisher_id: str, kind: str) -> int:
        """Frames the subscriber's browser decoded on the mids its peer says carry that publisher's `kind`."""
        return self.browsers[subscriber_id].frames_on(self.peer(subscriber_id).track_map(), publisher_id, kind)

    async def receives(self, subscriber_id: str, publisher_id: str, frames: int = 5, timeout: float = 10.0) -> None:
        """Wait until `frames` more frames of each kind from the publisher were decoded by the subscriber."""
        start = {kind: self.frames(subscriber_id, publisher_id, kind) for kind in ("audio", "video")}
        await eventually(lambda: all(self.frames(subscriber_id, publisher_id, kind) >= start[kind] + frames
                                     for kind in start),
                         timeout, what=f"{subscriber_id} decoding {frames} frames of each kind from {publisher_id}")

    async def close(self) -> None:
        await self.room.close()
        for browser in self._closing:
            await browser.close()
