"""Room and participant state behind an interface, so a Redis-backed registry
(multi-node mode) can replace the in-memory one without touching callers.

Only control-plane facts live here: which rooms exist, who is in them. The live
media objects stay in the process that owns the room.

A room id can be used again once its room is closed, so every creation of an id is an
*instance* with an unguessable id of its own. Links, recordings and trainer grants name
the instance, not just the id: a link of an earlier consultation under the same id does
not open the new one. The registry keeps every instance of an id (when it was created
and closed) so grants and recordings can be placed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Protocol

from recorder.fsutil import FILE_MODE, atomic_write

ROOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Live video watermarking (exports and replays are always marked): none; a label the
# page draws over the video; or visible + forensic marks burned in per viewer on the
# server (signalling/live_watermark.py).
LIVE_WATERMARK_MODES = ("off", "page", "server")
# Room texts the patient's page shows (the waiting room, error screens): their longest lengths.
ROOM_TEXT_LIMITS = {"clinic": 80, "doctor_name": 64, "contact": 120}


def room_text_problem(field: str, value: object) -> Optional[str]:
    """Why `value` cannot be the room text `field` (None: it can; None itself means unset).
    One line of printable text, so a page shows it as given and nothing else."""
    limit = ROOM_TEXT_LIMITS[field]
    if value is None or (isinstance(value, str) and 1 <= len(value) <= limit and value.isprintable()
                         and value.strip()):
        return None
    return f"'{field}' must be 1-{limit} printable characters"


def new_instance_id() -> str:
    """96 random bits, URL-safe: not guessable from the room id or the time."""
    return secrets.token_urlsafe(12)


@dataclass(frozen=True)
class RoomInstance:
    """One life of a room id, from its creation to its close."""
    room_id: str
    instance: str
    created_at: float
    closed_at: Optional[float] = None

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def public(self) -> dict:
        return {"instance": self.instance, "created_at": self.created_at, "closed_at": self.closed_at,
                "open": self.open}


def find_instance(lives: Sequence[RoomInstance], instance: str) -> Optional[RoomInstance]:
    return next((life for life in lives if life.instance == instance), None)


def instance_at(lives: Sequence[RoomInstance], t: float) -> Optional[RoomInstance]:
    """The instance that was the room's latest at wall time `t` (lives oldest first)."""
    before = [life for life in lives if life.created_at <= t]
    return before[-1] if before else None


def instance_minted_at(lives: Sequence[RoomInstance], iat: int) -> Optional[RoomInstance]:
    """The instance a link without an instance claim was minted for, from its `iat` (whole
    seconds): the latest one created by then. None when that one was created within the very
    second the link was minted and an earlier one exists: the link may belong to either."""
    before = [life for life in lives if int(life.created_at) <= iat]
    if not before or (int(before[-1].created_at) == iat and len(before) > 1):
        return None
    return before[-1]


@dataclass(frozen=True)
class RecordingNote:
    """A room's running recording, as its record keeps it: when the room's node dies or drains
    before the recording is stopped, the node that starts the call next records on, as the
    next part, without asking again those who answered (signalling/live_recording.py)."""
    recording_id: str
    actor: str  # who started it (an identity, or admin-api): the next part is theirs too
    by: str  # their name, as the pages show it
    part: int = 1
    answers: dict[str, bool] = field(default_factory=dict)  # identity -> agreed to be recorded?
    noted_at: float = 0.0  # unix s the running call last confirmed it: an old note is not carried on

    @classmethod
    def from_dict(cls, raw: dict) -> "RecordingNote":
        return cls(raw["recording_id"], raw["actor"], raw["by"], int(raw.get("part", 1)),
                   {str(k): bool(v) for k, v in raw.get("answers", {}).items()}, float(raw.get("noted_at", 0.0)))


@dataclass
class RoomRecord:
    id: str
    name: str
    created_at: float
    max_participants: int = 8
    closed_at: Optional[float] = None
    video_codec: str = "vp8"  # what publishers are asked to send: vp8 or h264
    processors: list[str] = field(default_factory=list)  # frame processors enabled, e.g. face-analysis
    # i18n.LOCALES: the patient's prompts and the pages its links open in; None: each page
    # follows its browser (prompts in English on the server's side)
    language: Optional[str] = None
    live_watermark: str = "off"  # one of LIVE_WATERMARK_MODES
    clinic: Optional[str] = None  # shown to the patient while they wait
    doctor_name: Optional[str] = None  # who the patient waits for ("Dr Lee"), in the waiting room's heading
    contact: Optional[str] = None  # how the patient reaches the clinic, on the waiting room and every error
    # a participant's media is recorded only once they agreed (those who may record excepted)
    consent_required: bool = False
    instance: str = ""  # this creation of the id (new_instance_id); "" only in a room list from before instances
    # the recording running when the call last ran (not in public(): the pages and the replay API tell it)
    recording: Optional[RecordingNote] = None

    @classmethod
    def from_dict(cls, raw: dict) -> "RoomRecord":
        """A record as asdict() stored it (rooms.json, Redis)."""
        note = raw.get("recording")
        return cls(**{**raw, "recording": RecordingNote.from_dict(note) if note else None})

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def life(self) -> RoomInstance:
        return RoomInstance(self.id, self.instance, self.created_at, self.closed_at)

    def public(self) -> dict:
        return {"id": self.id, "instance": self.instance, "name": self.name, "created_at": self.created_at,
                "max_participants": self.max_participants, "video_codec": self.video_codec,
                "processors": list(self.processors), "language": self.language,
                "live_watermark": self.live_watermark, "clinic": self.clinic, "doctor_name": self.doctor_name,
                "contact": self.contact, "consent_required": self.consent_required, "open": self.open}


@dataclass
class ParticipantRecord:
    id: str
    room_id: str
    identity: str
    name: str
    role: str
    permissions: list[str]
    joined_at: float
    muted: dict[str, bool] = field(default_factory=lambda: {"audio": False, "video": False})

    def public(self) -> dict:
        return {"id": self.id, "identity": self.identity, "name": self.name, "role": self.role,
                "permissions": sorted(self.permissions), "muted": dict(self.muted),
                "joined_at": self.joined_at}


class RoomRegistry(Protocol):
    async def create_room(self, name: str, room_id: Optional[str] = None, max_participants: int = 8,
                          video_codec: str = "vp8", processors: Optional[list[str]] = None,
                          language: Optional[str] = None, live_watermark: str = "off",
                          clinic: Optional[str] = None, consent_required: bool = False,
                          doctor_name: Optional[str] = None, contact: Optional[str] = None) -> RoomRecord: ...
    async def get_room(self, room_id: str) -> Optional[RoomRecord]: ...
    async def instances(self, room_id: str) -> list[RoomInstance]: ...
    async def list_rooms(self, include_closed: bool = False) -> list[RoomRecord]: ...
    async def close_room(self, room_id: str) -> bool: ...
    async def add_participant(self, participant: ParticipantRecord) -> None: ...
    async def update_participant(self, participant: ParticipantRecord) -> None: ...
    async def remove_participant(self, room_id: str, participant_id: str) -> None: ...
    async def list_participants(self, room_id: str) -> list[ParticipantRecord]: ...
    async def note_recording(self, room_id: str, instance: str, note: RecordingNote) -> bool: ...
    async def clear_recording(self, room_id: str, recording_id: str) -> bool: ...


class RegistryError(Exception):
    pass


class RegistryUnavailable(RegistryError):
    """The shared room list cannot be reached now (Redis down): worth trying again shortly."""


def new_room_record(name: str, room_id: Optional[str], max_participants: int, video_codec: str,
                    processors: Optional[list[str]], language: Optional[str], live_watermark: str,
                    clinic: Optional[str], consent_required: bool, doctor_name: Optional[str],
                    contact: Optional[str]) -> RoomRecord:
    """A new life of a room id (a fresh one when none is given), checked; RegistryError if not valid."""
    if live_watermark not in LIVE_WATERMARK_MODES:
        raise RegistryError(f"live_watermark must be one of {', '.join(LIVE_WATERMARK_MODES)}")
    room_id = room_id or secrets.token_urlsafe(9)
    if not ROOM_ID_PATTERN.match(room_id):
        raise RegistryError("room id: 1-64 characters of A-Z a-z 0-9 _ -")
    return RoomRecord(id=room_id, name=name, created_at=time.time(), max_participants=max_participants,
                      video_codec=video_codec, processors=list(processors or []), language=language,
                      live_watermark=live_watermark, clinic=clinic, consent_required=consent_required,
                      doctor_name=doctor_name, contact=contact, instance=new_instance_id())


class LocalParticipants:
    """Who is in each room, as this process knows it (the one running the calls)."""

    def __init__(self) -> None:
        self._by_room: dict[str, dict[str, ParticipantRecord]] = {}

    def add(self, room: Optional[RoomRecord], participant: ParticipantRecord) -> None:
        """Into `room` (its record, None: no such room); RegistryError when closed or full."""
        if room is None or not room.open:
            raise RegistryError(f"room {participant.room_id} is not open")
        members = self._by_room.setdefault(participant.room_id, {})
        if len(members) >= room.max_participants:
            raise RegistryError(f"room {participant.room_id} is full ({room.max_participants})")
        members[participant.id] = participant

    def update(self, participant: ParticipantRecord) -> None:
        members = self._by_room.get(participant.room_id, {})
        if participant.id in members:
            members[participant.id] = participant

    def remove(self, room_id: str, participant_id: str) -> None:
        self._by_room.get(room_id, {}).pop(participant_id, None)

    def of(self, room_id: str) -> list[ParticipantRecord]:
        return list(self._by_room.get(room_id, {}).values())

    def forget_room(self, room_id: str) -> None:
        self._by_room.pop(room_id, None)


class InMemoryRegistry:
    """The embedded default: one process, rooms persisted to a JSON file if given."""

    def __init__(self, rooms_file: Optional[Path] = None) -> None:
        self._rooms: dict[str, RoomRecord] = {}
        self._earlier: dict[str, list[RoomInstance]] = {}  # room id -> its closed earlier instances, oldest first
        self._participants = LocalParticipants()
        self._rooms_file = rooms_file
        self._lock = asyncio.Lock()
        if rooms_file is not None and rooms_file.exists():
            self._load(rooms_file)

    def _load(self, rooms_file: Path) -> None:
        migrated = False
        for raw in json.loads(rooms_file.read_text()):
            earlier = raw.pop("earlier", [])
            room = RoomRecord.from_dict(raw)
            if not room.instance:  # a room list written before instances: this life gets one now
                room.instance, migrated = new_instance_id(), True
            self._rooms[room.id] = room
            self._earlier[room.id] = [RoomInstance(room.id, e["instance"], e["created_at"], e["closed_at"])
                                      for e in earlier]
        if migrated or os.stat(rooms_file).st_mode & 0o777 != FILE_MODE:
            self._save()  # also rewrites a list left readable by others (written 0644 before) as 0600

    def _save(self) -> None:
        if self._rooms_file is None:
            return
        rooms = [asdict(r) | {"earlier": [{"instance": e.instance, "created_at": e.created_at,
                                             "closed_at": e.closed_at} for e in self._earlier.get(r.id, [])]}
                 for r in self._rooms.values()]
        # Room names may name patients: private (0600), and atomic so a crash never leaves half a list.
        atomic_write(self._rooms_file, json.dumps(rooms, indent=1).encode())

    async def create_room(self, name: str, room_id: Optional[str] = None, max_participants: int = 8,
                          video_codec: str = "vp8", processors: Optional[list[str]] = None,
                          language: Optional[str] = None, live_watermark: str = "off",
                          clinic: Optional[str] = None, consent_required: bool = False,
                          doctor_name: Optional[str] = None, contact: Optional[str] = None) -> RoomRecord:
        room = new_room_record(name, room_id, max_participants, video_codec, processors, language, live_watermark,
                               clinic, consent_required, doctor_name, contact)
        room_id = room.id
        async with self._lock:
            existing = self._rooms.get(room_id)
            if existing is not None and existing.open:
                raise RegistryError(f"room {room_id} already exists")
            if existing is not None:  # the id is used again: the closed life stays known, for its recordings
                self._earlier.setdefault(room_id, []).append(existing.life())
            self._rooms[room_id] = room
            self._participants.forget_room(room_id)  # a new life of the id starts empty
            self._save()
            return room

    async def get_room(self, room_id: str) -> Optional[RoomRecord]:
        return self._rooms.get(room_id)

    async def instances(self, room_id: str) -> list[RoomInstance]:
        """Every instance of the id, oldest first; the last is the current room (open or closed)."""
        room = self._rooms.get(room_id)
        return [] if room is None else [*self._earlier.get(room_id, []), room.life()]

    async def list_rooms(self, include_closed: bool = False) -> list[RoomRecord]:
        return [r for r in self._rooms.values() if include_closed or r.open]

    async def close_room(self, room_id: str) -> bool:
        async with self._lock:
            room = self._rooms.get(room_id)
            if room is None or not room.open:
                return False
            room.closed_at = time.time()
            room.recording = None  # its recording ended with it (here, or with its node)
            self._participants.forget_room(room_id)
            self._save()
            return True

    async def note_recording(self, room_id: str, instance: str, note: RecordingNote) -> bool:
        """The room's call records `note` now (started, continued, or someone answered): kept
        until cleared, so the next call of the room records on. False when `instance` is no
        longer the room's open one."""
        async with self._lock:
            room = self._rooms.get(room_id)
            if room is None or not room.open or room.instance != instance:
                return False
            room.recording = note
            self._save()
            return True

    async def clear_recording(self, room_id: str, recording_id: str) -> bool:
        """That recording was stopped on purpose: the room's next call does not record on. Only
        if the note still names it (another node may be recording the next part already)."""
        async with self._lock:
            room = self._rooms.get(room_id)
            if room is None or room.recording is None or room.recording.recording_id != recording_id:
                return False
            room.recording = None
            self._save()
            return True

    async def add_participant(self, participant: ParticipantRecord) -> None:
        self._participants.add(self._rooms.get(participant.room_id), participant)

    async def update_participant(self, participant: ParticipantRecord) -> None:
        self._participants.update(participant)

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        self._participants.remove(room_id, participant_id)

    async def list_participants(self, room_id: str) -> list[ParticipantRecord]:
        return self._participants.of(room_id)
