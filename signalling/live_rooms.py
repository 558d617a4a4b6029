"""Rooms with people in them: sessions, their media peers, and room events.

Control plane only: it creates and removes media peers through media.MediaRoom
and relays the media plane's callbacks (renegotiate, slot changes, failures)
to the right session. It never touches packets. RoomService joins, leaves and
places calls; a LiveRoom is one call, whose concerns live in modules of their own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from aiohttp import web

from annotate.board import AnnotationBoard
from media.ice import IceConfig
from media.processing import ProcessorEvent, ProcessorFactory, ProcessorHost
from media.processors.face_processor import CATALOGUE as PROCESSORS
from media.room import MediaRoom
from recorder.live import LiveRecording
from recorder.manifest import room_label

from .links import LinkGuard, LinkRefused
from .live_analysis import RoomAnalysis
from .live_captures import RoomCaptures
from .live_recording import RoomRecorder
from .live_watermark import LiveWatermarks, WatermarkUnavailable
from .placement import RoomPlacement
from .registry import ParticipantRecord, RegistryError, RegistryUnavailable, RoomRecord, RoomRegistry
from .revocations import REVOCATIONS_FILE, RevocationList, RevocationStore
from .roles import VIDEO_PRIORITY
from .room_events import RoomEvents, participant_data
from .tokens import Grant
from .waiting_room import WaitingRoom

if TYPE_CHECKING:
    from .session import ParticipantSession

logger = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012  # RFC 6455 registry: the page reconnects after its backoff


class JoinElsewhere(Exception):
    """The room's call runs on another node (signalling/placement.py): relay the join there."""

    def __init__(self, owner_url: str) -> None:
        super().__init__(owner_url)
        self.owner_url = owner_url


class JoinRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LiveRoom:
    """One room's live call: its sessions, its media (it implements media.room.RoomMediaEvents)
    and the session clock. Each concern of the call is an object of its own that talks to the
    room through a few methods (present, send_to, broadcast, record_event, emit): the recording
    (live_recording.py), the waiting room (waiting_room.py), photo captures (live_captures.py)
    and the processors' analysis (live_analysis.py)."""

    def __init__(self, record: RoomRecord, ice: IceConfig, data_dir: Path,
                 events: Optional[RoomEvents] = None, registry: Optional[RoomRegistry] = None) -> None:
        """`registry`: where the running recording is noted, so the room's next call (another
        node's, if this one dies) records on; None: not noted."""
        self.record = record
        self._events = events or RoomEvents()
        self.end_reason = "empty"  # why it ends, for room.ended: the last one left, unless the room is ended
        self._closed = False
        # The session clock: annotation events, analysis events and recordings share it.
        self._started = time.monotonic()
        self.board = AnnotationBoard(now_ms=self.session_ms)
        # live watermarking ("server" rooms: a marked copy per viewer, sharing the processors' decoder)
        self.watermarks = LiveWatermarks(
            record, data_dir,
            lambda pid: self.sessions[pid].joined_participant().role if pid in self.sessions else None)
        self.media = MediaRoom(record.id, ice, self, video_codec=record.video_codec,
                               sources=self.watermarks.start_host(lambda pid: self.processors.decoded_tap(pid)))
        self.sessions: dict[str, "ParticipantSession"] = {}
        self.recorder = RoomRecorder(self, record, label=self.recording_room, media=self.media, board=self.board,
                                     data_dir=data_dir, registry=registry)
        self.waiting = WaitingRoom(self, self._events.acknowledged)
        self.analysis = RoomAnalysis(self, record.id, self.board)
        # (looked up when used: the processors are made below, and a test may swap them)
        self.captures = RoomCaptures(self, data_dir, label=self.recording_room,
                                     face_analysis=lambda command: self.processors.command("face-analysis", command),
                                     on_failure=self.analysis.processor_failed)
        factories: dict[str, ProcessorFactory] = {
            name: PROCESSORS[name].in_language(record.language) for name in record.processors}
        self.processors = ProcessorHost(self.media, factories, sink=self._processor_event,
                                        on_failure=self.analysis.processor_failed, keep=self.captures.keep)

    def session_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    def session_ms_at(self, monotonic_s: float) -> int:
        return int((monotonic_s - self._started) * 1000)

    @property
    def recording_room(self) -> str:
        """How recordings and captures name this room: its id and this instance of it, so a
        trainer link of a later consultation under the same id does not reach them."""
        return room_label(self.record.id, self.record.instance)

    @property
    def recording(self) -> Optional[LiveRecording]:
        """The recording running now, if any."""
        return self.recorder.recording

    # --- what the room's concerns use ----------------------------------------------------------

    def present(self) -> list[ParticipantRecord]:
        """Who is in the call now."""
        return [session.joined_participant() for session in self.sessions.values()]

    def send_to(self, participant_id: str, message: dict) -> None:
        """To that participant's page, if they are still here."""
        session = self.sessions.get(participant_id)
        if session is not None:
            session.send(message)

    def broadcast(self, message: dict, exclude: Optional[str] = None) -> None:
        """To every page (but `exclude`'s), and into the recording."""
        self.record_event(message)
        if message["type"] == "annotation" and message["op"] == "add" and message["shape"]["anchor"] == "face":
            self.analysis.face_mark_added()  # first: the patient's page can then draw the mark as it arrives
        for pid, session in list(self.sessions.items()):
            if pid != exclude:
                session.send(message)

    def record_event(self, message: dict) -> None:
        """Into the recording only (analysis the pages get apart, by role)."""
        self.recorder.record_event(message)

    def emit(self, type: str, data: dict) -> str:
        """Tell the room's event listeners (webhooks) what happened; the event's id."""
        return self._events.emit(type, self.record, data)

    # --- media.room.RoomMediaEvents ------------------------------------------------------------

    def renegotiation_needed(self, participant_id: str) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.request_renegotiation()

    def tracks_changed(self, participant_id: str, changes: dict[str, Optional[dict]]) -> None:
        self.send_to(participant_id, {"type": "tracks", "tracks": changes})

    def video_paused(self, subscriber_id: str, publisher_id: str, paused: bool) -> None:
        message: dict = {"type": "video-state", "participant": publisher_id, "paused": paused}
        if paused:
            message["reason"] = "weak-connection"
        self.send_to(subscriber_id, message)

    def publisher_layers(self, publisher_id: str, rids: tuple[str, ...]) -> None:
        self.send_to(publisher_id, {"type": "layers", "kind": "video", "active": list(rids)})

    def connection_failed(self, participant_id: str) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.close_soon("disconnected")

    def _processor_event(self, processor: str, participant_id: str, event: ProcessorEvent) -> None:
        self.analysis.relay(processor, participant_id, event)
        self.captures.analysis_event(event.data)  # the photo protocol's end closes its record

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.waiting.close()
        await self.recorder.call_ended(self.end_reason)
        await self.captures.end()
        await self.processors.close()
        await self.media.close()
        self.watermarks.close()
        self.emit("room.ended", {"reason": self.end_reason, "duration_s": round(self.session_ms() / 1000, 1)})

    def by_identity(self, identity: str) -> Optional["ParticipantSession"]:
        return next((s for s in self.sessions.values() if s.joined_participant().identity == identity), None)


class RoomService:
    def __init__(self, registry: RoomRegistry, ice: IceConfig, data_dir: Path,
                 events: Optional[RoomEvents] = None, revocations: Optional[RevocationStore] = None,
                 placement: Optional[RoomPlacement] = None, clinic_contact: Optional[str] = None) -> None:
        """`clinic_contact`: the server's (--clinic-contact), for rooms without one and refusals of
        links that name no room the server can tell."""
        self.registry = registry
        self.clinic_contact = clinic_contact
        self.placement = placement  # several nodes: which one runs each room's call
        # sockets this node relays to the node running their room (their calls are not here)
        self.relayed: set[web.WebSocketResponse] = set()
        self._drain: Optional[asyncio.Task] = None
        self.events = events or RoomEvents()
        self.ice = ice
        self.data_dir = data_dir
        self.live: dict[str, LiveRoom] = {}  # by room id; always the room's current instance
        self.revocations = revocations if revocations is not None else RevocationList(data_dir / REVOCATIONS_FILE)
        self.links = LinkGuard(registry, self.revocations)
        # Other control-plane services (the replay API) finish their work here: the app's
        # shutdown calls shutdown().
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._shutdown_hooks.append(hook)

    def contact_line(self, room: Optional[RoomRecord]) -> Optional[str]:
        """How a patient of `room` reaches the clinic: the room's own contact, else the server's."""
        return (room.contact if room is not None else None) or self.clinic_contact

    async def contact_for(self, grant: Optional[Grant]) -> Optional[str]:
        """The contact line for a refused join. `grant`: the link's, when its signature verified
        (also an expired or revoked one); its room's contact then, if that room instance is the
        one the link was for. Anything else gets the server's: a forged or garbled token learns
        nothing about any room, not even whether it exists."""
        if grant is None:
            return self.clinic_contact
        try:
            life, _ = await self.links.instance_of(grant)
            room = await self.registry.get_room(grant.room)
        except (LinkRefused, RegistryUnavailable):
            return self.clinic_contact
        return self.contact_line(room if room is not None and room.instance == life.instance else None)

    async def join(self, session: "ParticipantSession") -> LiveRoom:
        grant = session.joined_grant()
        try:
            room = await self.links.for_live(grant)  # this room instance's link, not revoked
        except LinkRefused as exc:
            raise JoinRefused(exc.code, exc.message) from None
        except RegistryUnavailable as exc:
            raise JoinRefused("unavailable", str(exc)) from None
        if not (grant.allows("publish") or grant.allows("subscribe")):
            raise JoinRefused("forbidden", "this token may not take part in a live consultation")
        live = self.live.get(room.id)
        if live is not None and live.record.instance != room.instance:
            await self._end_live(live, "room-closed")  # an earlier instance's, closed behind our back
            live = None
        if live is None and self.placement is not None:
            try:
                owner = await self.placement.owner_elsewhere(room.id, placed_here=session.placed_here)
            except RegistryUnavailable as exc:
                raise JoinRefused("unavailable", str(exc)) from None
            if owner is not None:
                raise JoinElsewhere(owner)
        if live is None:
            live = self.live[room.id] = LiveRoom(room, self.ice, self.data_dir, self.events, self.registry)
            live.emit("room.started", {})
            await live.recorder.carry_on()  # its last call (on a node that died or drained) was recording

        # A participant reconnecting after a network drop replaces their old session.
        previous = live.by_identity(grant.identity)
        if previous is not None:
            await previous.close("replaced")
            if self.live.get(room.id) is not live:
                # it was alone here (a patient waiting) and the call ended with it: joined here,
                # the new page would sit in that ended call, apart from whoever comes next
                return await self.join(session)

        participant = ParticipantRecord(
            id="p-" + secrets.token_hex(6),
            room_id=room.id,
            identity=grant.identity,
            name=grant.name,
            role=grant.role,
            permissions=sorted(grant.permissions),
            joined_at=time.time(),
        )
        try:
            await live.watermarks.admit(participant)  # a viewer's watermark id before any marked video
        except WatermarkUnavailable as exc:
            raise JoinRefused("internal", f"this room watermarks video and that is unavailable: {exc}") from exc
        try:
            await self.registry.add_participant(participant)
        except RegistryUnavailable as exc:
            raise JoinRefused("unavailable", str(exc)) from exc
        except RegistryError as exc:
            raise JoinRefused("room_full", str(exc)) from exc
        session.participant = participant
        live.sessions[participant.id] = session
        session.peer = live.media.create_peer(
            participant.id, publish=grant.allows("publish"), subscribe=grant.allows("subscribe"),
            video_priority=VIDEO_PRIORITY.get(participant.role, 0),
        )
        if grant.allows("publish"):
            live.processors.participant_joined(participant.id, participant.role)
            live.recorder.record_participant(participant)
        live.broadcast({"type": "participant-joined", "participant": participant.public()}, exclude=participant.id)
        live.recorder.carry_answer(participant)
        live.emit("participant.joined", {"participant": participant_data(participant)})
        live.waiting.arrived(participant)  # a patient alone waits, and the clinic is told
        return live

    async def leave(self, session: "ParticipantSession", reason: str) -> None:
        participant = session.participant
        if participant is None:
            return
        live = self.live.get(participant.room_id)
        if live is None or live.sessions.get(participant.id) is not session:
            return
        del live.sessions[participant.id]
        live.waiting.left(participant.id)
        await self.registry.remove_participant(participant.room_id, participant.id)
        await live.processors.participant_left(participant.id)
        live.analysis.forget(participant.id)
        if not live.processors.running("face-analysis"):
            await live.captures.patient_left(participant.id)  # a photo protocol running cannot go on
        await live.media.remove_peer(participant.id)
        live.watermarks.forget(participant.id)
        live.broadcast({"type": "participant-left", "participant_id": participant.id, "reason": reason})
        live.emit("participant.left", {"participant": participant_data(participant), "reason": reason,
                                       "duration_s": round(time.time() - participant.joined_at, 1)})
        if not live.sessions:
            self.live.pop(participant.room_id, None)
            await live.close()  # the last one out ends the recording
            if self.placement is not None:
                await self.placement.release(participant.room_id)

    async def participants(self, room_id: str) -> list[ParticipantRecord]:
        return await self.registry.list_participants(room_id)

    async def kick(self, room_id: str, participant_id: str) -> bool:
        """Disconnects the participant and revokes their link, so it cannot rejoin with it."""
        live = self.live.get(room_id)
        session = live.sessions.get(participant_id) if live else None
        if session is None:
            return False
        grant = session.joined_grant()
        try:
            await self.revocations.revoke(grant.jti, grant.expires_at)  # first: no rejoin between close and revoke
        except OSError as exc:  # still refused until a restart (held in memory); the kick goes on
            logger.error("the kicked link of %s could not be saved as revoked: %s", grant.identity, exc)
        await session.close("kicked")
        return True

    async def revoke_link(self, jti: str, expires_at: int) -> int:
        """Revokes a link (raises OSError if that cannot be saved: it holds until a restart) and
        ends the sessions joined with it, as a kick does; how many there were."""
        try:
            await self.revocations.revoke(jti, expires_at)
        finally:
            ended = await self.end_sessions_of_link(jti)
        return ended

    async def end_sessions_of_link(self, jti: str) -> int:
        """Close the sessions joined with this link here, as a kick does (it was revoked: here,
        or on another node of the service); how many there were."""
        sessions = [s for live in self.live.values() for s in live.sessions.values() if s.joined_grant().jti == jti]
        for session in sessions:
            await session.close("kicked")
        return len(sessions)

    async def close_room(self, room_id: str) -> bool:
        # Closed in the registry first: from then on no link joins (its instance is no longer
        # open), so nobody slips in while the sessions are being ended.
        closed = await self.registry.close_room(room_id)
        live = self.live.get(room_id)
        if live is not None:
            await self._end_live(live, "room-closed")
        return closed

    async def _end_live(self, live: LiveRoom, reason: str) -> None:
        live.end_reason = reason  # the last session's leave closes it, with this reason
        for session in list(live.sessions.values()):
            await session.close(reason)
        await live.close()
        if self.live.get(live.record.id) is live:
            del self.live[live.record.id]
            if self.placement is not None:  # (compare and delete: a claim lost meanwhile stays the other's)
                await self.placement.release(live.record.id)

    @property
    def draining(self) -> bool:
        return self._drain is not None

    def start_drain(self, grace_s: float) -> asyncio.Task:
        """Drain (below) once: a second SIGTERM or admin call waits on the first."""
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._drained(grace_s))
        return self._drain

    async def drain(self, grace_s: float) -> None:
        await asyncio.shield(self.start_drain(grace_s))

    async def _drained(self, grace_s: float) -> None:
        """Before this node stops: no new rooms here (with other nodes to take them), the calls
        running here end by themselves for up to `grace_s`, then what is left moves (its pages
        rejoin, on another node: with several nodes, the rooms are placed again)."""
        if self.placement is not None:
            await self.placement.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        logger.info("draining: %d calls here; waiting up to %.0f s for them to end", len(self.live), grace_s)
        while self.live and loop.time() < deadline:
            await asyncio.sleep(0.25)
        for live in list(self.live.values()):
            if self.placement is not None:
                await self.placement.release(live.record.id)  # first: the rejoins place it afresh
            await self._end_live(live, "moved")

    def load(self) -> tuple[int, int]:
        """(live rooms, participants) on this node: where new rooms are placed."""
        return len(self.live), sum(len(live.sessions) for live in self.live.values())

    async def room_closed_elsewhere(self, room_id: str, instance: str) -> None:
        """The room was closed through another node (or this one): its call ends here if it runs here."""
        live = self.live.get(room_id)
        if live is not None and live.record.instance == instance:
            await self._end_live(live, "room-closed")

    async def room_moved(self, room_id: str) -> None:
        """Another node runs this room now (this one lost its claim): end the call here; the
        pages rejoin, and reach the room where it lives."""
        live = self.live.get(room_id)
        if live is not None:
            await self._end_live(live, "moved")

    async def shutdown(self) -> None:
        for live in list(self.live.values()):
            await self._end_live(live, "server-shutdown")
        self.live.clear()
        for ws in list(self.relayed):  # their pages reconnect, through another node
            await ws.close(code=CLOSE_SERVICE_RESTART, message=b"server-shutdown")
        for hook in self._shutdown_hooks:
            try:
                await hook()
            except Exception:  # one service's failure must not keep the others from finishing
                logger.exception("a shutdown hook failed")
