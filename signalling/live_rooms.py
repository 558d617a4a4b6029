"""Rooms with people in them: sessions, their media peers, and room events.

Control plane only: it creates and removes media peers through media.MediaRoom
and relays the media plane's callbacks (renegotiate, slot changes, failures)
to the right session. It never touches packets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from aiohttp import web

from annotate.board import AnnotationBoard
from annotate.face_relay import FaceLandmarkRelay, mesh_message
from media.ice import IceConfig
from media.processing import ProcessorEvent, ProcessorFactory, ProcessorHost
from media.processors.face_processor import CATALOGUE as PROCESSORS
from media.processors.face_processor import DEFAULT_PROTOCOL
from media.room import MediaRoom
from media.taps import PacketTap
from recorder.audit import Action
from recorder.errors import RecorderError
from recorder.live import LiveRecording
from recorder.manifest import room_label
from recorder.stills import StillCapture
from recorder.writer import MAX_EVENT_BYTES

from .links import LinkGuard, LinkRefused
from .live_watermark import LiveWatermarks, WatermarkUnavailable
from .placement import RoomPlacement
from .registry import (
    ParticipantRecord,
    RecordingNote,
    RegistryError,
    RegistryUnavailable,
    RoomRecord,
    RoomRegistry,
)
from .revocations import REVOCATIONS_FILE, RevocationList, RevocationStore
from .roles import VIDEO_PRIORITY
from .room_events import RoomEvents, participant_data
from .tokens import Grant

if TYPE_CHECKING:
    from .session import ParticipantSession

logger = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012  # RFC 6455 registry: the page reconnects after its backoff


RECORDING_KEYFRAME_INTERVAL_S = 5.0
# A call ended for these reasons goes on elsewhere (another node, or this one restarted), and so
# does its recording: the room's record keeps the note, and the next call records on.
RECORDING_MOVES = ("moved", "server-shutdown")
# ... if it comes back soon: a call that returns hours later (the same open room, a rejoin the
# next day) is a new conversation, and its recording is started again by someone who may.
RECORDING_CARRIES_ON_WITHIN_S = 600.0
RECORDING_NOTE_REFRESH_S = 60.0  # how often the running call confirms its note
STATEFUL_ANALYSIS = ("guidance", "capture")  # replayed to late joiners; metrics are not (they stream)
CLINICIAN_ROLES = ("doctor", "expert")  # whom a patient in the waiting room waits for


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
    """Implements media.room.RoomMediaEvents for one room."""

    def __init__(self, record: RoomRecord, ice: IceConfig, data_dir: Path,
                 events: Optional[RoomEvents] = None, registry: Optional[RoomRegistry] = None) -> None:
        """`registry`: where the running recording is noted, so the room's next call (another
        node's, if this one dies) records on; None: not noted."""
        self.record = record
        self._data_dir = data_dir
        self._events = events or RoomEvents()
        self._registry = registry
        self.end_reason = "empty"  # why it ends, for room.ended: the last one left, unless the room is ended
        self._closed = False
        self.recording: Optional[LiveRecording] = None
        self._recording_taps: list[tuple[str, str, PacketTap]] = []
        self._recording_lock = asyncio.Lock()  # one start at a time: a continuation and a doctor's click
        self._note_lock = asyncio.Lock()  # the room's note changes in the order the recording did
        self._recording_by: Optional[str] = None  # who started it: their name ...
        self._recording_actor: Optional[str] = None  # ... and identity (or admin-api)
        self._answered: set[str] = set()  # identities that answered the running recording's question
        # ... their answers as audited (consent_required rooms record only those who agreed), and
        # answers carried over from an earlier part not yet told to the room in this one
        self._answers: dict[str, bool] = {}
        self._carried: set[str] = set()
        self._keyframe_timer: Optional[asyncio.Task] = None
        # The session clock: annotation events, analysis events and (later) recordings share it.
        self._started = time.monotonic()
        self.board = AnnotationBoard(now_ms=self.session_ms)
        # face-anchored marks on the pages: the landmarks they need, and who has the mesh table
        self._face_relay = FaceLandmarkRelay(self.board)
        self._face_mesh_sent: set[str] = set()
        self._face_metrics: Optional[tuple[dict, Optional[frozenset[str]]]] = None  # the newest, and its roles
        # live watermarking ("server" rooms: a marked copy per viewer, sharing the processors' decoder)
        self.watermarks = LiveWatermarks(
            record, data_dir,
            lambda pid: self.sessions[pid].joined_participant().role if pid in self.sessions else None)
        self.media = MediaRoom(record.id, ice, self, video_codec=record.video_codec,
                               sources=self.watermarks.start_host(lambda pid: self.processors.decoded_tap(pid)))
        self.sessions: dict[str, "ParticipantSession"] = {}
        factories: dict[str, ProcessorFactory] = {
            name: PROCESSORS[name].in_language(record.language) for name in record.processors}
        self.processors = ProcessorHost(self.media, factories, sink=self._processor_event,
                                        on_failure=self._processor_failed, keep=self._processor_keep)
        self.capture: Optional[StillCapture] = None
        # the latest state-like analysis messages, replayed to late joiners (by processor, kind)
        self._analysis_state: dict[tuple[str, str], tuple[dict, Optional[frozenset[str]]]] = {}
        # the waiting room: each waiting patient's `participant.waiting` until the clinic took it
        # (by participant id), and the identities the clinic was told of while nobody came yet
        self._clinic_acks: dict[str, asyncio.Future[None]] = {}
        self._clinic_told: set[str] = set()

    def session_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    @property
    def recording_room(self) -> str:
        """How recordings and captures name this room: its id and this instance of it, so a
        trainer link of a later consultation under the same id does not reach them."""
        return room_label(self.record.id, self.record.instance)

    def renegotiation_needed(self, participant_id: str) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.request_renegotiation()

    def tracks_changed(self, participant_id: str, changes: dict[str, Optional[dict]]) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.send({"type": "tracks", "tracks": changes})

    def video_paused(self, subscriber_id: str, publisher_id: str, paused: bool) -> None:
        session = self.sessions.get(subscriber_id)
        if session is not None:
            message: dict = {"type": "video-state", "participant": publisher_id, "paused": paused}
            if paused:
                message["reason"] = "weak-connection"
            session.send(message)

    def publisher_layers(self, publisher_id: str, rids: tuple[str, ...]) -> None:
        session = self.sessions.get(publisher_id)
        if session is not None:
            session.send({"type": "layers", "kind": "video", "active": list(rids)})

    def connection_failed(self, participant_id: str) -> None:
        session = self.sessions.get(participant_id)
        if session is not None:
            session.close_soon("disconnected")

    def _processor_event(self, processor: str, participant_id: str, event: ProcessorEvent) -> None:
        message = {"type": "analysis", "processor": processor, "participant": participant_id,
                   "t_ms": self.session_ms(), **event.data}
        self._record_event(message)
        if event.data.get("kind") in STATEFUL_ANALYSIS:
            self._analysis_state[(processor, event.data["kind"])] = (message, event.to_roles)
        if event.data.get("kind") == "face-metrics":
            self._send_face_metrics(message, event.to_roles)
            return
        for session in list(self.sessions.values()):
            if event.to_roles is None or session.joined_participant().role in event.to_roles:
                session.send(message)
        if event.data.get("kind") == "capture" and event.data.get("state") in ("done", "stopped"):
            asyncio.ensure_future(self._end_capture())

    def _send_face_metrics(self, message: dict, to_roles: Optional[frozenset[str]], *,
                           only_landmarks: bool = False) -> None:
        """Metrics (all landmarks) to their roles; to everyone else, only while face-anchored
        marks exist, the few landmarks those marks need (annotate/face_relay.py). Not recorded:
        the recording keeps the metrics, which hold every landmark."""
        self._face_metrics = (message, to_roles)
        landmarks_only = self._face_relay.landmarks_message(message)
        for session in list(self.sessions.values()):
            participant = session.joined_participant()
            metrics_role = to_roles is None or participant.role in to_roles
            wanted = (None if only_landmarks else message) if metrics_role else landmarks_only
            if wanted is None:
                continue
            if participant.id not in self._face_mesh_sent:  # the table, once, before any landmarks
                self._face_mesh_sent.add(participant.id)
                session.send(mesh_message(message["processor"], message["participant"], message["t_ms"]))
            session.send(wanted)

    def _face_mark_added(self) -> None:
        """A new face-anchored mark (already on the board) may use landmarks the patient's
        page was not sent: send them now, from the newest metrics, rather than up to 200 ms
        later with the next."""
        if self._face_metrics is not None and self.session_ms() - self._face_metrics[0]["t_ms"] < 1000:
            self._send_face_metrics(*self._face_metrics, only_landmarks=True)

    # --- guided photo capture ----------------------------------------------------------------

    async def start_capture(self, by: "ParticipantRecord", poses: Optional[list[str]], tolerance_deg: float) -> str:
        """Start the photo protocol on the patient's analysed video; returns the capture's id."""
        if self.capture is None:
            self.capture = await StillCapture.start(self._data_dir, room=self.recording_room, actor=by.identity)
        # None would read as "stop" to the processor: an omitted list means the standard protocol
        command = {"capture": list(poses or DEFAULT_PROTOCOL), "tolerance_deg": tolerance_deg}
        if self.processors.command("face-analysis", command) == 0:
            await self._end_capture()
            raise LookupError("no patient video is being analysed (is the patient here, with face analysis on?)")
        return self.capture.id

    def stop_capture(self) -> bool:
        return self.processors.command("face-analysis", {"capture": None}) > 0

    def _processor_keep(self, processor: str, participant_id: str, kind: str, data: bytes, meta: dict) -> None:
        if kind == "still" and self.capture is not None:
            capture = self.capture
            stamp = self.session_ms()

            async def save() -> None:
                try:
                    await capture.save(stamp, data, {**meta, "participant": participant_id})
                except RecorderError as exc:
                    self._processor_failed(processor, participant_id, f"a still could not be stored: {exc}")

            asyncio.ensure_future(save())

    async def _end_capture(self) -> None:
        capture, self.capture = self.capture, None
        if capture is not None:
            await capture.close()  # after the saves queued before it (one lock, in order)
            self.emit("capture.completed", {"capture_id": capture.id, "stills": capture.count})

    def analysis_state_for(self, role: str) -> list[dict]:
        """What a page that joins now must know: the current prompt, the photo protocol's step."""
        return [message for message, roles in self._analysis_state.values() if roles is None or role in roles]

    def forget_analysis(self, participant_id: str) -> None:
        self._face_mesh_sent.discard(participant_id)
        for key, (message, _) in list(self._analysis_state.items()):
            if message["participant"] == participant_id:
                del self._analysis_state[key]

    def _processor_failed(self, processor: str, participant_id: str, error: str) -> None:
        logger.warning("processor %s failed on %s in room %s: %s", processor, participant_id, self.record.id, error)
        message = {"type": "processor-failed", "processor": processor, "participant": participant_id,
                   "error": error}
        for session in list(self.sessions.values()):
            if session.joined_grant().allows("moderate") or session.joined_participant().role in ("doctor", "expert"):
                session.send(message)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._end_wait()
        await self.stop_recording(self.end_reason if self.end_reason in RECORDING_MOVES else "room-closed")
        await self._end_capture()
        await self.processors.close()
        await self.media.close()
        self.watermarks.close()
        self.emit("room.ended", {"reason": self.end_reason, "duration_s": round(self.session_ms() / 1000, 1)})

    def emit(self, type: str, data: dict) -> str:
        """Tell the room's event listeners (webhooks) what happened; the event's id."""
        return self._events.emit(type, self.record, data)

    # --- the waiting room ----------------------------------------------------------------------

    def clinician_present(self) -> bool:
        return any(s.joined_participant().role in CLINICIAN_ROLES for s in self.sessions.values())

    def arrived(self, participant: "ParticipantRecord") -> None:
        """After `participant.joined`: a patient who finds no clinician here waits, and the clinic's
        systems are told (`participant.waiting`); once a webhook receiver took that event the
        patient's page is told (`clinic-notified`), and never before. A clinician ends the wait."""
        if participant.role in CLINICIAN_ROLES:
            self._end_wait()
            return
        if participant.role != "patient" or self.clinician_present():
            return
        if participant.identity in self._clinic_told:
            return  # told already in this wait: a phone's reconnect does not page the doctor again
        event_id = self.emit("participant.waiting", {"participant": participant_data(participant)})
        ack = self._events.acknowledged(event_id)
        if ack is None:  # no webhook: nothing can tell whether anyone knows, so the page claims nothing
            return
        self._clinic_acks[participant.id] = ack
        ack.add_done_callback(functools.partial(self._clinic_took, participant))

    def clinic_notice_for(self, participant: "ParticipantRecord") -> Optional[dict]:
        """For a page joining now: `clinic-notified` when the clinic was told of this patient
        already in this wait (a rejoin after a network drop), else None."""
        if participant.identity in self._clinic_told and not self.clinician_present():
            return {"type": "clinic-notified", "t_ms": self.session_ms()}
        return None

    def _clinic_took(self, participant: "ParticipantRecord", ack: asyncio.Future[None]) -> None:
        if self._clinic_acks.get(participant.id) is ack:
            del self._clinic_acks[participant.id]
        if ack.cancelled() or self._closed or self.clinician_present():
            return  # the wait ended first: the page no longer shows it
        if participant.identity in self._clinic_told:
            return  # a rejoin's page was told at its join already
        self._clinic_told.add(participant.identity)
        session = self.sessions.get(participant.id)
        if session is not None:
            session.send({"type": "clinic-notified", "t_ms": self.session_ms()})

    def left_waiting(self, participant_id: str) -> None:
        """That participant's page went: nobody is left to tell (a rejoin asks again)."""
        ack = self._clinic_acks.pop(participant_id, None)
        if ack is not None:
            ack.cancel()

    def _end_wait(self) -> None:
        """A clinician came (or the room ends): what the clinic was told is moot from now on."""
        for ack in self._clinic_acks.values():
            ack.cancel()
        self._clinic_acks.clear()
        self._clinic_told.clear()

    def broadcast(self, message: dict, exclude: Optional[str] = None) -> None:
        self._record_event(message)
        if message["type"] == "annotation" and message["op"] == "add" and message["shape"]["anchor"] == "face":
            self._face_mark_added()  # first: the patient's page can then draw the mark as it arrives
        for pid, session in list(self.sessions.items()):
            if pid != exclude:
                session.send(message)

    # --- recording ---------------------------------------------------------------------------

    def session_ms_at(self, monotonic_s: float) -> int:
        return int((monotonic_s - self._started) * 1000)

    def recording_state(self, participant: Optional["ParticipantRecord"] = None) -> dict:
        """The `recording` message; for `participant`, with their answer to this recording when
        they gave one (in an earlier part too), so their page does not ask again."""
        if self.recording is None:
            return {"type": "recording", "state": "off"}
        state = {"type": "recording", "state": "on", "recording_id": self.recording.id, "by": self._recording_by,
                 "consent_required": self.record.consent_required, "part": self.recording.part,
                 "continues": self.recording.continues}
        if participant is not None and participant.identity in self._answers:
            state["consent"] = self._answers[participant.identity]
        return state

    async def start_recording(self, by: "ParticipantRecord | str") -> LiveRecording:
        """Start recording every published track and the room's events. Raises RecorderError."""
        if isinstance(by, str):
            return await self._start_recording(by, by)
        return await self._start_recording(by.identity, by.name)

    async def continue_recording(self) -> Optional[LiveRecording]:
        """When the room's record says a recording was running when its call last stopped (its
        node died or drained before stopping it): record on at once, as the next part, for the
        same starter and keeping the answers given so far. None when there is nothing to carry on
        or it cannot start (logged; the note stays, for the next call)."""
        note = self.record.recording
        if note is None:
            return None
        if time.time() - note.noted_at > RECORDING_CARRIES_ON_WITHIN_S:
            logger.info("room %s: recording %s last confirmed %.0f s ago: not carried on", self.record.id,
                        note.recording_id, time.time() - note.noted_at)
            await self._forget_recording(note.recording_id)
            return None
        try:
            return await self._start_recording(note.actor, note.by, continuing=note)
        except RecorderError as exc:
            logger.error("room %s: recording %s could not be continued: %s", self.record.id, note.recording_id, exc)
            return None

    async def _start_recording(self, actor: str, by: str, continuing: Optional[RecordingNote] = None) -> LiveRecording:
        async with self._recording_lock:
            if self.recording is not None:
                return self.recording
            recording = await LiveRecording.start(
                self._data_dir, room=self.recording_room, actor=actor, session_ms_at=self.session_ms_at,
                on_failure=lambda reason: asyncio.ensure_future(self.stop_recording(f"error: {reason}")),
                continues=continuing.recording_id if continuing else None,
                part=continuing.part + 1 if continuing else 1)
            answers = dict(continuing.answers) if continuing else {}
            if continuing is not None:
                try:
                    await self._audit_carried_answers(recording, answers)
                except RecorderError:
                    await recording.stop()
                    raise
            self.recording, self._recording_by, self._recording_actor = recording, by, actor
            self._answered, self._answers, self._carried = set(answers), answers, set(answers)
        await self._note_recording()
        # the state at the start, so a replay shows what was already on screen
        for part in self.board.snapshot_parts(MAX_EVENT_BYTES - 1024):  # a full board is ~0.5 MB
            self._record_event(part)
        for session in list(self.sessions.values()):
            self._record_participant(session.joined_participant())
        self.broadcast({**self.recording_state(), "t_ms": self.session_ms()})
        self._keyframe_timer = asyncio.ensure_future(self._keyframes_while_recording())
        started: dict[str, object] = {"recording_id": recording.id, "by": actor}
        if continuing is not None:
            started |= {"continues": continuing.recording_id, "part": recording.part}
        self.emit("recording.started", started)
        return recording

    @staticmethod
    async def _audit_carried_answers(recording: LiveRecording, answers: dict[str, bool]) -> None:
        """Each answer carried into a new part, in the audit log under who gave it (as given for
        the part it continues): consent_required rooms record them from the start."""
        for identity, given in sorted(answers.items()):
            await recording.audit(identity, Action.RECORD_CONSENT,
                                  {"given": given, "carried_from": recording.continues})

    async def _note_recording(self) -> None:
        """The running recording (and the answers so far) in the room's record, shared with the
        other nodes: if this call ends without stopping it, the room's next call records on."""
        if self._registry is None:
            return
        async with self._note_lock:  # (a stop that came first has cleared the note: not written again)
            recording = self.recording
            if recording is None or self._recording_actor is None:
                return
            note = RecordingNote(recording.id, self._recording_actor, self._recording_by or self._recording_actor,
                                 recording.part, dict(self._answers), time.time())
            try:
                await self._registry.note_recording(self.record.id, self.record.instance, note)
            except RegistryError as exc:  # the recording goes on; only a later move would not carry it
                logger.warning("room %s: recording %s not noted in the room list (%s): should this call move, "
                               "its recording does not carry on", self.record.id, recording.id, exc)

    async def _forget_recording(self, recording_id: str) -> None:
        """The recording was stopped on purpose: the room's next call does not record on."""
        if self._registry is None:
            return
        async with self._note_lock:
            try:
                await self._registry.clear_recording(self.record.id, recording_id)
            except RegistryError as exc:
                logger.warning("room %s: stopped recording %s is still noted in the room list (%s): should "
                               "this call move, its recording carries on", self.record.id, recording_id, exc)

    def carry_answer(self, participant: "ParticipantRecord") -> None:
        """Someone whose answer carries over from an earlier part is back: the room (consoles list
        who agreed) and this part's events learn it, as a `consent` for this recording."""
        if self.recording is None or participant.identity not in self._carried:
            return
        self._carried.discard(participant.identity)
        self.broadcast({"type": "consent", "participant": participant.id, "recording_id": self.recording.id,
                        "given": self._answers[participant.identity], "carried_from": self.recording.continues,
                        "t_ms": self.session_ms()}, exclude=participant.id)

    async def record_consent(self, participant: "ParticipantRecord", recording_id: str, given: bool) -> bool:
        """A participant's answer to being recorded, in the audit log and the recording, and told
        to the room (consoles show who agreed). One answer per identity and recording (so no one
        can grow the log by repeating it); False when `recording_id` is not the one running or
        this identity answered already. Raises RecorderError when the audit log cannot take it."""
        recording = self.recording
        if recording is None or recording.id != recording_id or participant.identity in self._answered:
            return False
        self._answered.add(participant.identity)
        await recording.audit(participant.identity, Action.RECORD_CONSENT,
                              {"given": given, "participant": participant.id, "role": participant.role})
        if self.recording is not recording:  # stopped meanwhile: the answer is audited, nothing else
            return True
        held_back = self._held_back(participant)
        self._answers[participant.identity] = given
        self._carried.discard(participant.identity)
        message = {"type": "consent", "participant": participant.id, "recording_id": recording_id, "given": given,
                   "t_ms": self.session_ms()}
        self.broadcast(message)  # (into the recording too)
        self.emit("consent.given" if given else "consent.refused",
                  {"recording_id": recording_id, "participant": participant_data(participant)})
        if given and held_back:
            self._record_participant(participant)  # from this moment on
        await self._note_recording()  # so a later part (the call moved) does not ask again
        return True

    def _held_back(self, participant: "ParticipantRecord") -> bool:
        """Whether this participant's media waits for their consent before it is recorded."""
        return (self.record.consent_required and "record" not in participant.permissions
                and self._answers.get(participant.identity) is not True)

    async def _keyframes_while_recording(self) -> None:
        """A keyframe every few seconds, so a replay can seek without decoding from the start;
        now and then the room's note confirmed, so a move carries the recording on."""
        noted = time.monotonic()
        while self.recording is not None:
            await asyncio.sleep(RECORDING_KEYFRAME_INTERVAL_S)
            for participant_id, kind, _ in list(self._recording_taps):
                if kind == "video":
                    self._request_keyframe(participant_id, kind)
            if time.monotonic() - noted >= RECORDING_NOTE_REFRESH_S:
                noted = time.monotonic()
                await self._note_recording()

    def _record_participant(self, participant: "ParticipantRecord") -> None:
        if self.recording is None or "publish" not in participant.permissions or self._held_back(participant):
            return
        self._record_event({"type": "track-owner", "participant": participant.public(), "t_ms": self.session_ms()})
        for kind in ("audio", "video"):
            tap = self.recording.tap(f"{participant.id}-{kind}",
                                     functools.partial(self._request_keyframe, participant.id, kind))
            self._recording_taps.append((participant.id, kind, tap))
            self.media.add_tap(participant.id, kind, tap)

    def _request_keyframe(self, participant_id: str, kind: str) -> None:
        peer = self.media.peers.get(participant_id)
        track = peer.published.get(kind) if peer else None
        if track is not None:
            track.request_keyframe()

    def _record_event(self, message: dict) -> None:
        if self.recording is not None:
            self.recording.event(message.get("t_ms", self.session_ms()), message)

    async def stop_recording(self, reason: str = "stopped") -> Optional[str]:
        recording = self.recording
        if recording is None:
            return None
        self.recording = None
        if self._keyframe_timer is not None:
            self._keyframe_timer.cancel()
            self._keyframe_timer = None
        for participant_id, kind, tap in self._recording_taps:
            self.media.remove_tap(participant_id, kind, tap)
        self._recording_taps.clear()
        self.emit("recording.stopped", {"recording_id": recording.id, "reason": reason})
        if reason not in RECORDING_MOVES:  # on purpose (or failed): the room's next call does not record on
            await self._forget_recording(recording.id)
        await recording.stop()
        self.emit("recording.sealed", {"recording_id": recording.id, "failure": recording.failure})
        message = {"type": "recording", "state": "off", "recording_id": recording.id, "reason": reason,
                   "t_ms": self.session_ms()}
        self.broadcast(message)
        return recording.id

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
            await live.continue_recording()  # its last call (on a node that died or drained) was recording

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
            live._record_participant(participant)
        live.broadcast({"type": "participant-joined", "participant": participant.public()}, exclude=participant.id)
        live.carry_answer(participant)
        live.emit("participant.joined", {"participant": participant_data(participant)})
        live.arrived(participant)  # a patient alone waits, and the clinic is told
        return live

    async def leave(self, session: "ParticipantSession", reason: str) -> None:
        participant = session.participant
        if participant is None:
            return
        live = self.live.get(participant.room_id)
        if live is None or live.sessions.get(participant.id) is not session:
            return
        del live.sessions[participant.id]
        live.left_waiting(participant.id)
        await self.registry.remove_participant(participant.room_id, participant.id)
        await live.processors.participant_left(participant.id)
        live.forget_analysis(participant.id)
        if live.capture is not None and not live.processors.running("face-analysis"):
            # the patient whose photos were being taken left: end the protocol where everyone sees it
            live.broadcast({"type": "analysis", "processor": "face-analysis", "participant": participant.id,
                            "t_ms": live.session_ms(), "kind": "capture", "state": "stopped", "pose": None,
                            "remaining": []})
            await live._end_capture()
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
