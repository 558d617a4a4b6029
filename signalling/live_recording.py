"""A live room's recording: started and stopped by someone who may record, or carried on as the
next part when the room's call moved while recording; what goes in (the recorded participants'
tracks, the room's events, regular keyframes) and each participant's answer to being recorded.

The room's record in the registry notes the running recording (`RecordingNote`) so that the
room's next call, on whichever node, records on; docs/ARCHITECTURE.md, "Known limits".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from pathlib import Path
from typing import Optional, Protocol

from annotate.board import AnnotationBoard
from media.room import MediaRoom
from media.taps import PacketTap
from recorder.audit import Action
from recorder.errors import RecorderError
from recorder.live import LiveRecording
from recorder.writer import MAX_EVENT_BYTES

from .registry import ParticipantRecord, RecordingNote, RegistryError, RoomRecord, RoomRegistry
from .room_events import participant_data

logger = logging.getLogger(__name__)

RECORDING_KEYFRAME_INTERVAL_S = 5.0
# A call ended for these reasons goes on elsewhere (another node, or this one restarted), and so
# does its recording: the room's record keeps the note, and the next call records on.
RECORDING_MOVES = ("moved", "server-shutdown")
# ... if it comes back soon: a call that returns hours later (the same open room, a rejoin the
# next day) is a new conversation, and its recording is started again by someone who may.
RECORDING_CARRIES_ON_WITHIN_S = 600.0
RECORDING_NOTE_REFRESH_S = 60.0  # how often the running call confirms its note


class RecordedRoom(Protocol):
    """What a recording needs of its room (signalling.live_rooms.LiveRoom)."""

    def session_ms(self) -> int: ...

    def session_ms_at(self, monotonic_s: float) -> int: ...

    def present(self) -> list[ParticipantRecord]: ...

    def broadcast(self, message: dict, exclude: Optional[str] = None) -> None: ...

    def emit(self, type: str, data: dict) -> str: ...


class RoomRecorder:
    """One room's recordings, one at a time, on the room's session clock."""

    def __init__(self, room: RecordedRoom, record: RoomRecord, *, label: str, media: MediaRoom,
                 board: AnnotationBoard, data_dir: Path, registry: Optional[RoomRegistry] = None) -> None:
        """`label`: how recordings name the room (recorder.manifest.room_label); `media`: whose
        tracks are tapped; `board`: its state goes first into each recording; `registry`: where the
        running recording is noted, so the room's next call (another node's, if this one dies)
        records on; None: not noted."""
        self._room = room
        self._record = record
        self._label = label
        self._media = media
        self._board = board
        self._data_dir = data_dir
        self._registry = registry
        self.recording: Optional[LiveRecording] = None  # the one running
        self._taps: list[tuple[str, str, PacketTap]] = []  # (participant id, kind, tap)
        self._start_lock = asyncio.Lock()  # one start at a time: a continuation and a doctor's click
        self._note_lock = asyncio.Lock()  # the room's note changes in the order the recording did
        self._by: Optional[str] = None  # who started it: their name ...
        self._actor: Optional[str] = None  # ... and identity (or admin-api)
        self._answered: set[str] = set()  # identities that answered the running recording's question
        # ... their answers as audited (consent_required rooms record only those who agreed), and
        # answers carried over from an earlier part not yet told to the room in this one
        self._answers: dict[str, bool] = {}
        self._carried: set[str] = set()
        self._keyframe_timer: Optional[asyncio.Task] = None

    @property
    def recorded(self) -> frozenset[str]:
        """The participants (ids) whose media goes into the running recording."""
        return frozenset(participant_id for participant_id, _, _ in self._taps)

    def state(self, participant: Optional[ParticipantRecord] = None) -> dict:
        """The `recording` message; for `participant`, with their answer to this recording when
        they gave one (in an earlier part too), so their page does not ask again."""
        if self.recording is None:
            return {"type": "recording", "state": "off"}
        state = {"type": "recording", "state": "on", "recording_id": self.recording.id, "by": self._by,
                 "consent_required": self._record.consent_required, "part": self.recording.part,
                 "continues": self.recording.continues}
        if participant is not None and participant.identity in self._answers:
            state["consent"] = self._answers[participant.identity]
        return state

    async def start(self, by: ParticipantRecord | str) -> LiveRecording:
        """Start recording every published track and the room's events. Raises RecorderError."""
        if isinstance(by, str):
            return await self._start(by, by)
        return await self._start(by.identity, by.name)

    async def carry_on(self) -> Optional[LiveRecording]:
        """When the room's record says a recording was running when its call last stopped (its
        node died or drained before stopping it): record on at once, as the next part, for the
        same starter and keeping the answers given so far. None when there is nothing to carry on
        or it cannot start (logged; the note stays, for the next call)."""
        note = self._record.recording
        if note is None:
            return None
        if time.time() - note.noted_at > RECORDING_CARRIES_ON_WITHIN_S:
            logger.info("room %s: recording %s last confirmed %.0f s ago: not carried on", self._record.id,
                        note.recording_id, time.time() - note.noted_at)
            await self._forget(note.recording_id)
            return None
        try:
            return await self._start(note.actor, note.by, continuing=note)
        except RecorderError as exc:
            logger.error("room %s: recording %s could not be continued: %s", self._record.id, note.recording_id, exc)
            return None

    async def _start(self, actor: str, by: str, continuing: Optional[RecordingNote] = None) -> LiveRecording:
        async with self._start_lock:
            if self.recording is not None:
                return self.recording
            recording = await LiveRecording.start(
                self._data_dir, room=self._label, actor=actor, session_ms_at=self._room.session_ms_at,
                on_failure=lambda reason: asyncio.ensure_future(self.stop(f"error: {reason}")),
                continues=continuing.recording_id if continuing else None,
                part=continuing.part + 1 if continuing else 1)
            answers = dict(continuing.answers) if continuing else {}
            if continuing is not None:
                try:
                    await self._audit_carried_answers(recording, answers)
                except RecorderError:
                    await recording.stop()
                    raise
            self.recording, self._by, self._actor = recording, by, actor
            self._answered, self._answers, self._carried = set(answers), answers, set(answers)
        await self._note()
        # the state at the start, so a replay shows what was already on screen
        for part in self._board.snapshot_parts(MAX_EVENT_BYTES - 1024):  # a full board is ~0.5 MB
            self.record_event(part)
        for participant in self._room.present():
            self.record_participant(participant)
        self._room.broadcast({**self.state(), "t_ms": self._room.session_ms()})
        self._keyframe_timer = asyncio.ensure_future(self._keyframes_while_recording())
        started: dict[str, object] = {"recording_id": recording.id, "by": actor}
        if continuing is not None:
            started |= {"continues": continuing.recording_id, "part": recording.part}
        self._room.emit("recording.started", started)
        return recording

    @staticmethod
    async def _audit_carried_answers(recording: LiveRecording, answers: dict[str, bool]) -> None:
        """Each answer carried into a new part, in the audit log under who gave it (as given for
        the part it continues): consent_required rooms record them from the start."""
        for identity, given in sorted(answers.items()):
            await recording.audit(identity, Action.RECORD_CONSENT,
                                  {"given": given, "carried_from": recording.continues})

    async def _note(self) -> None:
        """The running recording (and the answers so far) in the room's record, shared with the
        other nodes: if this call ends without stopping it, the room's next call records on."""
        if self._registry is None:
            return
        async with self._note_lock:  # (a stop that came first has cleared the note: not written again)
            recording = self.recording
            if recording is None or self._actor is None:
                return
            note = RecordingNote(recording.id, self._actor, self._by or self._actor, recording.part,
                                 dict(self._answers), time.time())
            try:
                await self._registry.note_recording(self._record.id, self._record.instance, note)
            except RegistryError as exc:  # the recording goes on; only a later move would not carry it
                logger.warning("room %s: recording %s not noted in the room list (%s): should this call move, "
                               "its recording does not carry on", self._record.id, recording.id, exc)

    async def _forget(self, recording_id: str) -> None:
        """The recording was stopped on purpose: the room's next call does not record on."""
        if self._registry is None:
            return
        async with self._note_lock:
            try:
                await self._registry.clear_recording(self._record.id, recording_id)
            except RegistryError as exc:
                logger.warning("room %s: stopped recording %s is still noted in the room list (%s): should "
                               "this call move, its recording carries on", self._record.id, recording_id, exc)

    def carry_answer(self, participant: ParticipantRecord) -> None:
        """Someone whose answer carries over from an earlier part is back: the room (consoles list
        who agreed) and this part's events learn it, as a `consent` for this recording."""
        if self.recording is None or participant.identity not in self._carried:
            return
        self._carried.discard(participant.identity)
        self._room.broadcast({"type": "consent", "participant": participant.id, "recording_id": self.recording.id,
                              "given": self._answers[participant.identity], "carried_from": self.recording.continues,
                              "t_ms": self._room.session_ms()}, exclude=participant.id)

    async def record_consent(self, participant: ParticipantRecord, recording_id: str, given: bool) -> bool:
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
                   "t_ms": self._room.session_ms()}
        self._room.broadcast(message)  # (into the recording too)
        self._room.emit("consent.given" if given else "consent.refused",
                        {"recording_id": recording_id, "participant": participant_data(participant)})
        if given and held_back:
            self.record_participant(participant)  # from this moment on
        await self._note()  # so a later part (the call moved) does not ask again
        return True

    def _held_back(self, participant: ParticipantRecord) -> bool:
        """Whether this participant's media waits for their consent before it is recorded."""
        return (self._record.consent_required and "record" not in participant.permissions
                and self._answers.get(participant.identity) is not True)

    async def _keyframes_while_recording(self) -> None:
        """A keyframe every few seconds, so a replay can seek without decoding from the start;
        now and then the room's note confirmed, so a move carries the recording on."""
        noted = time.monotonic()
        while self.recording is not None:
            await asyncio.sleep(RECORDING_KEYFRAME_INTERVAL_S)
            for participant_id, kind, _ in list(self._taps):
                if kind == "video":
                    self._request_keyframe(participant_id, kind)
            if time.monotonic() - noted >= RECORDING_NOTE_REFRESH_S:
                noted = time.monotonic()
                await self._note()

    def record_participant(self, participant: ParticipantRecord) -> None:
        """Tap this participant's tracks into the running recording, unless they publish nothing
        or their media waits for their consent."""
        if self.recording is None or "publish" not in participant.permissions or self._held_back(participant):
            return
        self.record_event({"type": "track-owner", "participant": participant.public(), "t_ms": self._room.session_ms()})
        for kind in ("audio", "video"):
            tap = self.recording.tap(f"{participant.id}-{kind}",
                                     functools.partial(self._request_keyframe, participant.id, kind))
            self._taps.append((participant.id, kind, tap))
            self._media.add_tap(participant.id, kind, tap)

    def _request_keyframe(self, participant_id: str, kind: str) -> None:
        peer = self._media.peers.get(participant_id)
        track = peer.published.get(kind) if peer else None
        if track is not None:
            track.request_keyframe()

    def record_event(self, message: dict) -> None:
        """A room event (a message the pages get) into the running recording, if any."""
        if self.recording is not None:
            self.recording.event(message.get("t_ms", self._room.session_ms()), message)

    async def stop(self, reason: str = "stopped") -> Optional[str]:
        """Stop and seal the running recording; its id, or None when nothing was recording."""
        recording = self.recording
        if recording is None:
            return None
        self.recording = None
        if self._keyframe_timer is not None:
            self._keyframe_timer.cancel()
            self._keyframe_timer = None
        for participant_id, kind, tap in self._taps:
            self._media.remove_tap(participant_id, kind, tap)
        self._taps.clear()
        self._room.emit("recording.stopped", {"recording_id": recording.id, "reason": reason})
        if reason not in RECORDING_MOVES:  # on purpose (or failed): the room's next call does not record on
            await self._forget(recording.id)
        await recording.stop()
        self._room.emit("recording.sealed", {"recording_id": recording.id, "failure": recording.failure})
        message = {"type": "recording", "state": "off", "recording_id": recording.id, "reason": reason,
                   "t_ms": self._room.session_ms()}
        self._room.broadcast(message)
        return recording.id

    async def call_ended(self, reason: str) -> None:
        """The room's call ended for `reason` (LiveRoom.end_reason): a call that goes on elsewhere
        leaves the note, so its recording carries on there; any other end closes it for good."""
        await self.stop(reason if reason in RECORDING_MOVES else "room-closed")
