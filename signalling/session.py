"""One participant's WebSocket: join, negotiation, messages, leaving.

Everything a client sends is validated (protocol.parse_client_message), rate
limited (FloodGuard) and answered with a typed error when wrong; only fatal
token/room problems, floods that go on, oversized frames and a missing answer
end the session. Whatever happens here, the rest of the room keeps its media.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from aiohttp import WSMsgType, web

from annotate.model import AnnotationError
from media.peer import AnswerRejected, MediaPeer
from media.sdp_simulcast import SIMULCAST_LADDER
from recorder.errors import RecorderError

from . import log_context
from .http_limits import CLOSE_TRY_AGAIN_LATER, SignallingSocket
from .live_rooms import JoinElsewhere, JoinRefused
from .node_relay import relay_websocket
from .outbox import Outbox
from .protocol import (
    CLOSE_FORBIDDEN_ROOM,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    PROTOCOL_VERSIONS,
    ProtocolError,
    error_message,
    parse_client_message,
)
from .rate_limit import FloodGuard
from .registry import ParticipantRecord
from .tokens import Grant, TokenError, TokenIssuer

if TYPE_CHECKING:
    from .live_rooms import LiveRoom, RoomService

logger = logging.getLogger(__name__)

# How long the closing handshake may take before the connection is dropped.
CLOSE_HANDSHAKE_S = 2.0

_CLOSE_CODE_FOR_ERROR = {
    "unauthorized": CLOSE_UNAUTHORIZED,
    "token_expired": CLOSE_UNAUTHORIZED,
    "wrong_room": CLOSE_FORBIDDEN_ROOM,
    "stale_link": CLOSE_UNAUTHORIZED,
    "link_revoked": CLOSE_UNAUTHORIZED,
    "forbidden": CLOSE_FORBIDDEN_ROOM,
    "room_full": CLOSE_FORBIDDEN_ROOM,
    "too_large": CLOSE_TOO_BIG,
    "unavailable": CLOSE_TRY_AGAIN_LATER,
}

# Told how long a join took, once per stage: "joined" (the join message to `joined` sent) and
# "connected" (to the media connection first connected); the metrics service observes them.
JoinTimer = Callable[[str, float], None]


class ParticipantSession:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        rooms: "RoomService",
        issuer: TokenIssuer,
        ice_servers: Callable[[str], list[dict]],
        join_timeout_s: float,
        answer_timeout_s: float,
        on_joined: Optional[Callable[[], None]] = None,
        on_join_timing: Optional[JoinTimer] = None,
        placed_here: bool = False,
        relay_headers: Callable[[], dict[str, str]] = dict,
    ) -> None:
        """`placed_here`: another node of the service relayed this join for this node to run
        its room (signalling/placement.py); `relay_headers()`: what a join relayed on from here carries."""
        self.ws = ws
        self.placed_here = placed_here
        self._relay_headers = relay_headers
        self._on_joined = on_joined  # the app's count of not-yet-joined sockets lets go of this one
        self._on_join_timing = on_join_timing
        self._rooms = rooms
        self._issuer = issuer
        self._ice_servers = ice_servers  # by participant id: TURN credentials are minted per session
        self._join_timeout_s = join_timeout_s
        self._answer_timeout_s = answer_timeout_s
        self._outbox = Outbox(ws, on_overflow=lambda: self.close_soon("error"))
        self._flood = FloodGuard()
        self.grant: Optional[Grant] = None
        self.participant: Optional[ParticipantRecord] = None
        self.peer: Optional[MediaPeer] = None
        self.room: Optional["LiveRoom"] = None
        # negotiation: the server offers, one offer outstanding at a time
        self._negotiation_lock = asyncio.Lock()
        self._rev = 0
        self._awaiting_rev: Optional[int] = None
        self._renegotiate = False
        self._answer_timer: Optional[asyncio.TimerHandle] = None
        self._closing: Optional[asyncio.Task] = None
        self._closed = False
        self.close_reason: Optional[str] = None
        self._log_ids: dict[str, str] = {}  # room, participant, request: for tasks other sessions start

    # --- outbound --------------------------------------------------------------------

    def send(self, message: dict) -> None:
        if not self._closed:
            self._outbox.put(message)

    def send_error(self, code: str, message: str, fatal: bool = False) -> None:
        self.send(error_message(code, message, fatal))

    # --- what the join set up -------------------------------------------------------------
    # grant, participant, peer and room stay None until _join succeeds (RoomService.join sets
    # participant and peer); these read them where they must be there.

    def joined_grant(self) -> Grant:
        if self.grant is None:
            raise RuntimeError("the session's token has not been verified yet")
        return self.grant

    def joined_participant(self) -> ParticipantRecord:
        if self.participant is None:
            raise RuntimeError("the session has not joined a room yet")
        return self.participant

    def _joined_peer(self) -> MediaPeer:
        if self.peer is None:
            raise RuntimeError("the session has no media peer yet")
        return self.peer

    def _joined_room(self) -> "LiveRoom":
        if self.room is None:
            raise RuntimeError("the session has not joined a room yet")
        return self.room

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await self._join():
                if self._on_joined is not None:
                    self._on_joined()
                await self._receive_loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("session failed")
        finally:
            await self.close(self.close_reason or "disconnected")  # shielded

    async def _fatal(self, code: str, message: str) -> None:
        self.send_error(code, message, fatal=True)
        await self.close("error", ws_code=_CLOSE_CODE_FOR_ERROR.get(code, CLOSE_POLICY), notify=False)

    async def _refuse(self, code: str, message: str, grant: Optional[Grant] = None) -> None:
        """A join refused (fatally): the error carries how to reach the clinic, since the page can
        only show an error screen now. `grant`: the link's when its signature verified (the
        refusal may then name its room's contact), None for anything else."""
        if code == "unavailable":  # the room list is out of reach (the page tries again): no lookup
            grant = None
        self.send({**error_message(code, message, fatal=True), "contact": await self._rooms.contact_for(grant)})
        await self.close("error", ws_code=_CLOSE_CODE_FOR_ERROR.get(code, CLOSE_POLICY), notify=False)

    async def _join(self) -> bool:
        try:
            msg = await self.ws.receive(timeout=self._join_timeout_s)
        except asyncio.TimeoutError:
            await self._refuse("unauthorized", f"send 'join' within {self._join_timeout_s:g} s of connecting")
            return False
        join_started = time.monotonic()
        if msg.type != WSMsgType.TEXT:
            if msg.type == WSMsgType.BINARY:
                await self._refuse("unauthorized", "the first message must be a JSON 'join'")
            return False
        try:
            message = parse_client_message(msg.data)
        except ProtocolError as exc:
            await self._refuse("too_large" if exc.code == "too_large" else "unauthorized",
                               f"the first message must be a valid 'join': {exc.message}")
            return False
        if message["type"] != "join":
            await self._refuse("unauthorized", "the first message must be 'join'")
            return False
        if message["v"] not in PROTOCOL_VERSIONS:
            await self._refuse("bad_message", f"protocol version {message['v']} is not supported; "
                                              f"use one of {list(PROTOCOL_VERSIONS)}")
            return False
        try:
            self.grant = self._issuer.verify(message["token"])
            log_context.bind(room=self.grant.room)  # this task's log lines, and those of tasks it starts
        except TokenError as exc:
            await self._refuse(exc.code, exc.message, exc.expired)
            return False
        try:
            self.room = await self._rooms.join(self)
        except JoinRefused as exc:
            await self._refuse(exc.code, exc.message, self.grant)
            return False
        except JoinElsewhere as exc:  # the room's call runs on another node: this socket is relayed there
            if self._on_joined is not None:
                self._on_joined()  # no longer a socket waiting to join here
            self._rooms.relayed.add(self.ws)  # (closed when this node stops)
            try:
                await relay_websocket(self.ws, exc.owner_url, msg.data, self._relay_headers())
            finally:
                self._rooms.relayed.discard(self.ws)
            self.close_reason = "relayed"
            return False
        participant = self.joined_participant()  # RoomService.join set it
        log_context.bind(participant=participant.id)
        self._log_ids = log_context.current()
        others = [s.joined_participant().public() for pid, s in self.room.sessions.items() if pid != participant.id]
        self.send({
            "type": "joined",
            "v": PROTOCOL_VERSIONS[-1],
            "participant": participant.public(),
            "room": {"id": self.room.record.id, "name": self.room.record.name,
                     "live_watermark": self.room.record.live_watermark, "clinic": self.room.record.clinic,
                     "doctor_name": self.room.record.doctor_name,
                     "contact": self._rooms.contact_line(self.room.record)},
            "participants": others,
            "ice_servers": self._ice_servers(participant.id),
        })
        self.send(self.room.board.snapshot())  # the drawing so far, for a late joiner
        self.send(self.room.recorder.state(participant))  # consent: everyone knows whether they are recorded
        for message in self.room.analysis.state_for(participant.role):
            self.send(message)
        if (notice := self.room.waiting.clinic_notice_for(participant)) is not None:
            self.send(notice)  # a rejoin while waiting: the clinic was told already
        self._time_join(join_started)
        self.request_renegotiation()
        return True

    def _time_join(self, started: float) -> None:
        timer = self._on_join_timing
        if timer is None:
            return
        timer("joined", time.monotonic() - started)
        self._joined_peer().on_connected = lambda: timer("connected", time.monotonic() - started)

    async def _receive_loop(self) -> None:
        async for msg in self.ws:
            # one message per turn of the loop: a client's buffered burst otherwise runs whole
            # before any outbox writer does, and its broadcasts overflow every page's outbox
            await asyncio.sleep(0)
            if msg.type == WSMsgType.TEXT:
                verdict = await self._admit()
                if verdict == "stop":
                    return
                if verdict == "drop":
                    continue
                try:
                    message = parse_client_message(msg.data)
                except ProtocolError as exc:
                    if exc.fatal:
                        await self._fatal(exc.code, exc.message)
                        return
                    self.send(exc.to_message())
                    continue
                try:
                    if await self._dispatch(message) is False:
                        return
                except Exception:
                    logger.exception("handling %s failed", message.get("type"))
                    self.send_error("internal", f"the server failed to handle '{message['type']}'")
            elif msg.type == WSMsgType.BINARY:
                verdict = await self._admit()
                if verdict == "stop":
                    return
                if verdict == "process":
                    self.send_error("binary_not_supported", "binary frames are not part of the protocol")
            elif msg.type == WSMsgType.ERROR:
                # aiohttp reports frames over the 64 KiB cap here, having closed with 1009
                # (after app.SignallingSocket sent the typed `too_large` error)
                return

    async def _admit(self) -> str:
        """'process' the message, 'drop' it (over the rate), or 'stop' the session."""
        admitted, first_drop, too_long = self._flood.admit()
        if admitted:
            return "process"
        if too_long:
            await self._fatal("rate_limited", "message flood went on too long")
            return "stop"
        if first_drop:
            self.send_error("rate_limited", "too many messages; some were dropped")
        return "drop"

    async def _dispatch(self, message: dict[str, Any]) -> Optional[bool]:
        kind = message["type"]
        if kind == "ping":
            self.send({"type": "pong"})
        elif kind == "answer":
            await self._on_answer(message["rev"], message["sdp"])
        elif kind == "mute":
            participant = self.joined_participant()
            participant.muted[message["kind"]] = message["muted"]
            await self._rooms.registry.update_participant(participant)
            self._joined_room().broadcast({"type": "participant-updated", "participant": participant.public()})
        elif kind == "kick":
            participant = self.joined_participant()
            if not self.joined_grant().allows("moderate"):
                self.send_error("forbidden", "kicking participants needs the 'moderate' permission")
            elif message["participant_id"] == participant.id:
                self.send_error("bad_message", "use 'leave' to leave")
            elif not await self._rooms.kick(participant.room_id, message["participant_id"]):
                self.send_error("bad_message", "no such participant in this room")
        elif kind == "leave":
            self.close_reason = "left"
            return False
        elif kind == "annotate":
            self._on_annotate(message)
        elif kind == "annotations-get":
            self.send(self._joined_room().board.snapshot())
        elif kind == "record":
            await self._on_record(message["action"])
        elif kind == "consent":
            await self._on_consent(message["recording_id"], message["given"])
        elif kind == "capture":
            await self._on_capture(message)
        elif kind == "view":
            self._joined_room().media.set_views(self.joined_participant().id, {
                publisher_id: (size["width"], size["height"]) for publisher_id, size in message["videos"].items()})
        elif kind == "join":
            self.send_error("bad_state", "already joined")
        return None

    def _on_annotate(self, message: dict[str, Any]) -> None:
        grant, room = self.joined_grant(), self._joined_room()
        if not grant.allows("annotate"):
            self.send_error("forbidden", "drawing needs the 'annotate' permission")
            return
        try:
            # the identity, not the participant id: undo still works after a reconnect
            event = room.board.apply(self.joined_participant().identity, message, moderator=grant.allows("moderate"))
        except AnnotationError as exc:
            self.send(exc.to_message())
            return
        room.broadcast(event)

    async def _on_consent(self, recording_id: str, given: bool) -> None:
        room = self._joined_room()
        try:
            if not await room.recorder.record_consent(self.joined_participant(), recording_id, given):
                self.send_error("bad_state", "that recording is not the one running, or it was answered already")
        except RecorderError as exc:
            self.send_error("recording_failed", f"the answer could not be recorded: {exc}")

    async def _on_record(self, action: str) -> None:
        room = self._joined_room()
        if not self.joined_grant().allows("record"):
            self.send_error("forbidden", "recording needs the 'record' permission")
            return
        if action == "stop":
            if await room.recorder.stop("stopped") is None:
                self.send_error("bad_state", "nothing is being recorded")
            return
        try:
            await room.recorder.start(self.joined_participant())
        except RecorderError as exc:
            self.send_error("recording_failed", f"the recording could not start: {exc}")

    async def _on_capture(self, message: dict[str, Any]) -> None:
        room = self._joined_room()
        if not self.joined_grant().allows("record"):
            self.send_error("forbidden", "capturing clinical photos needs the 'record' permission")
            return
        if message["action"] == "stop":
            if not room.captures.stop():
                self.send_error("bad_state", "no photo capture is running")
            return
        try:
            await room.captures.start(self.joined_participant(), message.get("poses"),
                                      message.get("tolerance_deg", 8.0))
        except LookupError as exc:
            self.send_error("bad_state", str(exc))
        except RecorderError as exc:
            self.send_error("recording_failed", f"photos cannot be stored: {exc}")

    # --- negotiation ------------------------------------------------------------------

    def request_renegotiation(self) -> None:
        self._renegotiate = True
        if self._awaiting_rev is None and not self._closed:
            asyncio.ensure_future(self._offer_if_needed())

    async def _offer_if_needed(self) -> None:
        self._log_as_this_session()  # another session's join may have started this task
        async with self._negotiation_lock:
            if not self._renegotiate or self._awaiting_rev is not None or self._closed:
                return
            self._renegotiate = False
            try:
                peer = self._joined_peer()
                if not peer.has_media:
                    return  # only watching, nobody to watch yet: the first publisher's slot asks again
                sdp = await peer.create_offer()
            except Exception:
                logger.exception("creating an offer failed")
                self.close_soon("error")
                return
            self._rev += 1
            self._awaiting_rev = self._rev
            self.send({
                "type": "offer",
                "rev": self._rev,
                "sdp": sdp,
                "publish": peer.publish_mids(),
                "tracks": peer.track_map(),
                **({"simulcast": [layer.to_message() for layer in SIMULCAST_LADDER]}
                   if peer.offers_simulcast else {}),
            })
            loop = asyncio.get_running_loop()
            self._answer_timer = loop.call_later(self._answer_timeout_s, self._answer_timed_out)

    def _answer_timed_out(self) -> None:
        # as any fatal error: the last message, then a policy close (docs/PROTOCOL.md)
        self.send_error("bad_state", f"no answer within {self._answer_timeout_s:g} s", fatal=True)
        self._start_close("error", CLOSE_POLICY, notify=False)

    async def _on_answer(self, rev: int, sdp: str) -> None:
        async with self._negotiation_lock:
            if self._awaiting_rev is None or rev != self._awaiting_rev:
                self.send_error("bad_state", f"no offer with rev {rev} is waiting for an answer")
                return
            try:
                await self._joined_peer().apply_answer(sdp)
            except AnswerRejected as exc:
                self.send_error(exc.code, exc.message)
                return
            self._awaiting_rev = None
            if self._answer_timer is not None:
                self._answer_timer.cancel()
                self._answer_timer = None
        if self._renegotiate:
            await self._offer_if_needed()

    def _log_as_this_session(self) -> None:
        """Lines this task logs from here on (and its new tasks') name this session's room and participant."""
        log_context.bind(**self._log_ids)

    # --- closing ------------------------------------------------------------------------

    def close_soon(self, reason: str) -> None:
        self._start_close(reason, CLOSE_NORMAL, notify=True)

    async def close(self, reason: str, ws_code: int = CLOSE_NORMAL, notify: bool = True) -> None:
        """End the session once; safe to await from any task, and not cut short by cancellation.

        aiohttp cancels a WebSocket handler when its client vanishes; the clean-up
        (media peer, registry, telling the others) must still run to the end.
        """
        await asyncio.shield(self._start_close(reason, ws_code, notify))

    def _start_close(self, reason: str, ws_code: int, notify: bool) -> asyncio.Task:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason, ws_code, notify))
        return self._closing

    async def _close(self, reason: str, ws_code: int, notify: bool) -> None:
        self._log_as_this_session()  # a kick or a closed room may have started this task
        self._closed = True
        self.close_reason = self.close_reason or reason
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        if notify and self.participant is not None:
            self._outbox.put({"type": "closed", "reason": reason})
        await self._outbox.flush_and_close()
        try:
            # with a reason: an empty one marks a close by aiohttp's frame-size check (app.SignallingSocket)
            await asyncio.wait_for(self.ws.close(code=ws_code, message=reason.encode()[:120]), CLOSE_HANDSHAKE_S)
        except (Exception, asyncio.CancelledError):
            # a client that stopped reading never takes the close frame (the wait ends in a timeout,
            # or is cancelled with aiohttp's shared drain waiter): drop it, and clean up regardless
            if isinstance(self.ws, SignallingSocket):
                self.ws.abort()
        try:
            await self._rooms.leave(self, self.close_reason)
        except Exception:
            logger.exception("clean-up after %s failed", self.participant and self.participant.id)
