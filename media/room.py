"""Which published track goes to which subscriber slot, for one room.

The control plane creates and removes peers; this class wires the media: when a
participant's track starts, every other subscriber gets it in that publisher's
slot pair; when a participant goes, its slots elsewhere go idle and its own
down-tracks stop. It reports back through RoomMediaEvents, never by importing
the control plane.

Who feeds whom is decided here: each edge of the packet path (a source, i.e. a
published track or what a SourceChooser made of it, feeding a subscriber's
down-track) is made and removed here, with media/packet_path.py's `connect` and
`disconnect`: when a track starts or a subscriber joins, when a chooser withholds
a track, and when its publisher leaves (before the slot goes idle). The room is
never on the per-packet path. A simulcast track picks which of its own layers
feeds each down-track connected to it; a source that stops, or a down-track that
stops, ends its edges through the same two calls.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Protocol

from .ice import IceConfig
from .layer_sizes import Size
from .packet_path import DownTrackSource, connect, disconnect
from .peer import KINDS, MediaPeer
from .published_track import PublishedTrack
from .simulcast import Publication
from .taps import PacketTap

logger = logging.getLogger(__name__)


class RoomMediaEvents(Protocol):
    def renegotiation_needed(self, participant_id: str) -> None: ...

    def tracks_changed(self, participant_id: str, changes: dict[str, Optional[dict]]) -> None: ...

    def connection_failed(self, participant_id: str) -> None: ...

    def video_paused(self, subscriber_id: str, publisher_id: str, paused: bool) -> None:
        """The publisher's video to this subscriber paused for its downlink's sake (or resumed)."""
        ...

    def publisher_layers(self, publisher_id: str, rids: tuple[str, ...]) -> None:
        """The publisher should send only these simulcast layers of its camera from now on."""
        ...


class SourceChooser(Protocol):
    """What a subscriber's down-track carries of a track: the track itself (forwarded), a
    source made from it (e.g. a watermarked copy, media/watermark_host.py), or None (nothing)."""

    def source_for(self, track: PublishedTrack, subscriber_id: str) -> Optional[DownTrackSource]: ...


class MediaRoom:
    def __init__(self, room_id: str, ice: IceConfig, events: RoomMediaEvents, video_codec: str = "vp8",
                 sources: Optional[SourceChooser] = None, simulcast: bool = True) -> None:
        self.room_id = room_id
        self._ice = ice
        self._video_codec = video_codec
        self._events = events
        self._sources = sources
        self._simulcast = simulcast  # ask browsers for camera layers (not where sources are made per viewer)
        self.peers: dict[str, MediaPeer] = {}
        # taps wanted on (participant, kind); attached when that track starts
        self._taps: dict[tuple[str, str], list[PacketTap]] = {}

    def create_peer(self, participant_id: str, *, publish: bool, subscribe: bool, video_priority: int = 0) -> MediaPeer:
        """`video_priority`: how much this participant's video matters to the others; a narrow
        downlink keeps the higher ones longest."""
        if participant_id in self.peers:
            raise ValueError(f"participant {participant_id} already has a peer in room {self.room_id}")
        peer = MediaPeer(
            participant_id,
            publish=publish,
            subscribe=subscribe,
            ice=self._ice,
            video_codec=self._video_codec,
            on_track_started=self._track_started,
            on_connection_failed=lambda p: self._events.connection_failed(p.participant_id),
            video_priority=video_priority,
            priority_of=self._video_priority,
            simulcast=self._simulcast and self._sources is None,
            on_video_paused=lambda p, publisher_id, paused: self._events.video_paused(
                p.participant_id, publisher_id, paused),
            on_publisher_layers=lambda p, rids: self._events.publisher_layers(p.participant_id, rids),
        )
        self.peers[participant_id] = peer
        if subscribe:
            # Slots for everyone already publishing go into this peer's first offer.
            for other in self.peers.values():
                if other is not peer:
                    for track in other.published.values():
                        self._subscribe(peer, track, notify=False)
        return peer

    def set_views(self, subscriber_id: str, views: dict[str, Size]) -> None:
        """The sizes `subscriber_id`'s page draws others' videos at (publisher id -> device
        pixels); ids of no one in the room are left out (one may have just left)."""
        subscriber = self.peers.get(subscriber_id)
        if subscriber is None:
            return
        for publisher_id, view in views.items():
            if publisher_id in self.peers and publisher_id != subscriber_id:
                subscriber.set_view(publisher_id, view)

    def _video_priority(self, participant_id: str) -> int:
        peer = self.peers.get(participant_id)
        return 0 if peer is None else peer.video_priority

    async def remove_peer(self, participant_id: str) -> None:
        peer = self.peers.pop(participant_id, None)
        if peer is None:
            return
        for kind in ("audio", "video"):
            for tap in self._taps.pop((participant_id, kind), []):
                tap.close()
        for subscriber in self.peers.values():
            self._disconnect_slot(subscriber, participant_id)
            pair = subscriber.release_slot(participant_id)
            if pair is not None:
                changes = subscriber.pair_track_map(pair)
                if changes:
                    self._events.tracks_changed(subscriber.participant_id, changes)
        await peer.close()

    async def close(self) -> None:
        for participant_id in list(self.peers):
            await self.remove_peer(participant_id)

    def add_tap(self, participant_id: str, kind: str, tap: PacketTap) -> None:
        """Tap a participant's track, now if it is being published, else when it starts."""
        self._taps.setdefault((participant_id, kind), []).append(tap)
        peer = self.peers.get(participant_id)
        track = peer.published.get(kind) if peer else None
        if track is not None:
            track.add_tap(tap)

    def remove_tap(self, participant_id: str, kind: str, tap: PacketTap) -> None:
        taps = self._taps.get((participant_id, kind), [])
        if tap in taps:
            taps.remove(tap)
        peer = self.peers.get(participant_id)
        if peer and kind in peer.published:
            peer.published[kind].remove_tap(tap)
        tap.close()

    def _track_started(self, publisher: MediaPeer, track: Publication) -> None:
        if self.peers.get(publisher.participant_id) is not publisher:
            return  # started after its participant left
        for tap in self._taps.get((publisher.participant_id, track.kind), []):
            track.add_tap(tap)
        for subscriber in self.peers.values():
            if subscriber is not publisher and subscriber.can_subscribe:
                self._subscribe(subscriber, track, notify=True)

    def _subscribe(self, subscriber: MediaPeer, track: Publication, *, notify: bool) -> None:
        try:
            pair, created = subscriber.claim_slot(track.participant_id)
        except RuntimeError as exc:
            logger.warning("not forwarding %s to %s: %s", track, subscriber, exc)
            return
        # (a room with a source chooser does not offer simulcast: its sources are made from one stream)
        source: Optional[DownTrackSource] = track
        if self._sources is not None and isinstance(track, PublishedTrack):
            source = self._sources.source_for(track, subscriber.participant_id)
        if source is not None:
            connect(source, pair.downtracks[track.kind])
        else:
            disconnect(pair.downtracks[track.kind])  # withheld: nothing rather than something unmarked
        if not notify:
            return
        if created:
            self._events.renegotiation_needed(subscriber.participant_id)
        else:
            changes = subscriber.pair_track_map(pair)
            if changes:
                self._events.tracks_changed(subscriber.participant_id, changes)

    def _disconnect_slot(self, subscriber: MediaPeer, publisher_id: str) -> None:
        """The down-tracks `subscriber` received `publisher_id` on carry nothing (before the slot goes idle)."""
        pair = subscriber.slot_for(publisher_id)
        if pair is not None:
            for downtrack in pair.downtracks.values():
                disconnect(downtrack)

    def forwarding_summary(self) -> dict:
        """Counters per peer, for the admin API and tests: what each publishes, and what
        it is sent of each other participant ("publisher:kind")."""
        summary = {}
        for pid, peer in self.peers.items():
            summary[pid] = {
                "published": {k: t.summary() for k, t in peer.published.items()},
                "downlink": {**peer.send_budget.summary(time.monotonic()), **peer.downlink.summary()},
                "receiving": {
                    f"{pair.publisher_id}:{kind}": pair.downtracks[kind].summary()
                    for pair in peer.pairs
                    if pair.publisher_id is not None
                    for kind in KINDS
                },
            }
        return summary
