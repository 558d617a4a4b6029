"""The few methods a live call offers its concerns (signalling/live_rooms.LiveRoom: present,
send_to, broadcast, record_event, emit, the session clock), kept in lists, so the recording,
the waiting room, captures and the analysis relay can each be tested on their own. Events go
through a real RoomEvents."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Optional

from signalling.registry import ParticipantRecord, RoomRecord
from signalling.roles import DEFAULT_PERMISSIONS
from signalling.room_events import RoomEvents

_ids = itertools.count(1)


class CallRoom:
    def __init__(self, record: RoomRecord, events: Optional[RoomEvents] = None) -> None:
        self.record = record
        self.room_events = events or RoomEvents()
        self.room_events.subscribe(lambda type, room_id, instance, data, event_id: self.events.append((type, data)))
        self.events: list[tuple[str, dict]] = []  # (type, data), as emitted
        self.people: dict[str, ParticipantRecord] = {}
        self.pages: dict[str, list[dict]] = defaultdict(list)  # what each participant's page got
        self.broadcasts: list[dict] = []
        self.recorded: list[dict] = []  # record_event's messages (broadcasts included, as LiveRoom does)
        self.into_recording: Optional[Callable[[dict], None]] = None  # e.g. a RoomRecorder's record_event
        self._started = time.monotonic()

    def join(self, role: str, identity: Optional[str] = None, permissions: Optional[list[str]] = None
             ) -> ParticipantRecord:
        granted = DEFAULT_PERMISSIONS[role] if permissions is None else permissions
        participant = ParticipantRecord(id=f"p-{next(_ids)}", room_id=self.record.id, identity=identity or role,
                                        name=role.capitalize(), role=role, permissions=sorted(granted),
                                        joined_at=time.time())
        self.people[participant.id] = participant
        return participant

    def leave(self, participant: ParticipantRecord) -> None:
        del self.people[participant.id]

    def session_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    def session_ms_at(self, monotonic_s: float) -> int:
        return int((monotonic_s - self._started) * 1000)

    def present(self) -> list[ParticipantRecord]:
        return list(self.people.values())

    def send_to(self, participant_id: str, message: dict) -> None:
        if participant_id in self.people:
            self.pages[participant_id].append(message)

    def broadcast(self, message: dict, exclude: Optional[str] = None) -> None:
        self.record_event(message)
        self.broadcasts.append(message)
        for participant_id in self.people:
            if participant_id != exclude:
                self.pages[participant_id].append(message)

    def record_event(self, message: dict) -> None:
        self.recorded.append(message)
        if self.into_recording is not None:
            self.into_recording(message)

    def emit(self, type: str, data: dict) -> str:
        return self.room_events.emit(type, self.record, data)

    def types(self) -> list[str]:
        return [type for type, _ in self.events]
