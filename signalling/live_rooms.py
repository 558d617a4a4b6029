"""Rooms with people in them: sessions, their media peers, and room events.

Control plane only: it creates and removes media peers through media.MediaRoom
and relays the media plane's callbacks (renegotiate, slot changes, failures)
to the right session. It never touches packets.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Optional

from annotate.board import AnnotationBoard
from media.ice import IceConfig
from media.processing import ProcessorEvent, ProcessorHost
from media.processors.face_processor import CATALOGUE as PROCESSORS
from media.room import MediaRoom

from .registry import ParticipantRecord, RegistryError, RoomRecord, RoomRegistry

if TYPE_CHECKING:
    from .session import ParticipantSession

logger = logging.getLogger(__name__)


class JoinRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LiveRoom:
    """Implements media.room.RoomMediaEvents for one room."""

    def __init__(self, record: RoomRecord, ice: IceConfig) -> None:
        self.record = record
        # The session clock: annotation events, analysis events and (later) recordings share it.
        self._started = time.monotonic()
        self.board = AnnotationBoard(now_ms=self.session_ms)
        self.media = MediaRoom(record.id, ice, self, video_codec=record.video_codec)
        self.sessions: dict[str, "ParticipantSession"] = {}
        factories = {name: PROCESSORS[name].in_language(record.language) for name in record.processors}
        self.processors = ProcessorHost(self.media, factories, sink=self._processor_event,
                                        on_failure=self._processor_failed)

    def session_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    def renegotiation_needed(self, participant_id: str) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.request_renegotiation()

    def tracks_changed(self, participant_id: str, changes: dict[str, Optional[dict]]) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.send({"type": "tracks", "tracks": changes})

    def connection_failed(self, participant_id: str) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.close_soon("disconnected")

    def _processor_event(self, processor: str, participant_id: str, event: ProcessorEvent) -> None:
        message = {"type": "analysis", "processor": processor, "participant": participant_id,
                   "t_ms": self.session_ms(), **event.data}
        for session in list(self.sessions.values()):
            if event.to_roles is None or session.participant.role in event.to_roles:
                session.send(message)

    def _processor_failed(self, processor: str, participant_id: str, error: str) -> None:
        logger.warning("processor %s failed on %s in room %s: %s", processor, participant_id, self.record.id, error)
        message = {"type": "processor-failed", "processor": processor, "participant": participant_id,
                   "error": error}
        for session in list(self.sessions.values()):
            if session.grant.allows("moderate") or session.participant.role in ("doctor", "expert"):
                session.send(message)

    async def close(self) -> None:
        await self.processors.close()
        await self.media.close()

    def broadcast(self, message: dict, exclude: Optional[str] = None) -> None:
        for pid, session in list(self.sessions.items()):
            if pid != exclude:
                session.send(message)

    def by_identity(self, identity: str) -> Optional["ParticipantSession"]:
        return next((s for s in self.sessions.values() if s.participant.identity == identity), None)


class RoomService:
    def __init__(self, registry: RoomRegistry, ice: IceConfig) -> None:
        self.registry = registry
        self.ice = ice
        self.live: dict[str, LiveRoom] = {}

    async def join(self, session: "ParticipantSession") -> LiveRoom:
        grant = session.grant
        room = await self.registry.get_room(grant.room)
        if room is None or not room.open:
            raise JoinRefused("wrong_room", f"room {grant.room!r} does not exist or is closed")
        if not (grant.allows("publish") or grant.allows("subscribe")):
            raise JoinRefused("forbidden", "this token may not take part in a live consultation")
        live = self.live.get(room.id)
        if live is None:
            live = self.live[room.id] = LiveRoom(room, self.ice)

        # A participant reconnecting after a network drop replaces their old session.
        previous = live.by_identity(grant.identity)
        if previous is not None:
            await previous.close("replaced")

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
            await self.registry.add_participant(participant)
        except RegistryError as exc:
            raise JoinRefused("room_full", str(exc)) from exc
        session.participant = participant
        live.sessions[participant.id] = session
        session.peer = live.media.create_peer(
            participant.id, publish=grant.allows("publish"), subscribe=grant.allows("subscribe")
        )
        if grant.allows("publish"):
            live.processors.participant_joined(participant.id, participant.role)
        live.broadcast({"type": "participant-joined", "participant": participant.public()}, exclude=participant.id)
        return live

    async def leave(self, session: "ParticipantSession", reason: str) -> None:
        participant = session.participant
        if participant is None:
            return
        live = self.live.get(participant.room_id)
        if live is None or live.sessions.get(participant.id) is not session:
            return
        del live.sessions[participant.id]
        await self.registry.remove_participant(participant.room_id, participant.id)
        await live.processors.participant_left(participant.id)
        await live.media.remove_peer(participant.id)
        live.broadcast({"type": "participant-left", "participant_id": participant.id, "reason": reason})
        if not live.sessions:
            self.live.pop(participant.room_id, None)

    async def participants(self, room_id: str) -> list[ParticipantRecord]:
        return await self.registry.list_participants(room_id)

    async def kick(self, room_id: str, participant_id: str) -> bool:
        live = self.live.get(room_id)
        session = live.sessions.get(participant_id) if live else None
        if session is None:
            return False
        await session.close("kicked")
        return True

    async def close_room(self, room_id: str) -> bool:
        live = self.live.get(room_id)
        if live is not None:
            for session in list(live.sessions.values()):
                await session.close("room-closed")
            await live.close()
            self.live.pop(room_id, None)
        return await self.registry.close_room(room_id)

    async def shutdown(self) -> None:
        for room_id in list(self.live):
            live = self.live[room_id]
            for session in list(live.sessions.values()):
                await session.close("server-shutdown")
            await live.close()
        self.live.clear()
