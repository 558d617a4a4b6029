"""The waiting room of a live room: a patient who finds no clinician in the call waits, the
clinic's systems are told (`participant.waiting`), and the patient's page hears
`clinic-notified` only once a webhook receiver took that event. A clinician ends the wait.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Optional, Protocol

from .registry import ParticipantRecord
from .room_events import participant_data

CLINICIAN_ROLES = ("doctor", "expert")  # whom a patient in the waiting room waits for


class WaitedRoom(Protocol):
    """What the waiting room needs of its room (signalling.live_rooms.LiveRoom)."""

    def session_ms(self) -> int: ...

    def present(self) -> list[ParticipantRecord]: ...

    def send_to(self, participant_id: str, message: dict) -> None: ...

    def emit(self, type: str, data: dict) -> str: ...


class WaitingRoom:
    def __init__(self, room: WaitedRoom, acknowledged: Callable[[str], Optional[asyncio.Future[None]]]) -> None:
        """`acknowledged`: RoomEvents.acknowledged, done once the clinic's systems took an event."""
        self._room = room
        self._acknowledged = acknowledged
        # each waiting patient's `participant.waiting` until the clinic took it (by participant id),
        # and the identities the clinic was told of while nobody came yet
        self._clinic_acks: dict[str, asyncio.Future[None]] = {}
        self._clinic_told: set[str] = set()
        self._closed = False

    def clinician_present(self) -> bool:
        return any(p.role in CLINICIAN_ROLES for p in self._room.present())

    def arrived(self, participant: ParticipantRecord) -> None:
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
        event_id = self._room.emit("participant.waiting", {"participant": participant_data(participant)})
        ack = self._acknowledged(event_id)
        if ack is None:  # no webhook: nothing can tell whether anyone knows, so the page claims nothing
            return
        self._clinic_acks[participant.id] = ack
        ack.add_done_callback(functools.partial(self._clinic_took, participant))

    def clinic_notice_for(self, participant: ParticipantRecord) -> Optional[dict]:
        """For a page joining now: `clinic-notified` when the clinic was told of this patient
        already in this wait (a rejoin after a network drop), else None."""
        if participant.identity in self._clinic_told and not self.clinician_present():
            return {"type": "clinic-notified", "t_ms": self._room.session_ms()}
        return None

    def _clinic_took(self, participant: ParticipantRecord, ack: asyncio.Future[None]) -> None:
        if self._clinic_acks.get(participant.id) is ack:
            del self._clinic_acks[participant.id]
        if ack.cancelled() or self._closed or self.clinician_present():
            return  # the wait ended first: the page no longer shows it
        if participant.identity in self._clinic_told:
            return  # a rejoin's page was told at its join already
        self._clinic_told.add(participant.identity)
        self._room.send_to(participant.id, {"type": "clinic-notified", "t_ms": self._room.session_ms()})

    def left(self, participant_id: str) -> None:
        """That participant's page went: nobody is left to tell (a rejoin asks again)."""
        ack = self._clinic_acks.pop(participant_id, None)
        if ack is not None:
            ack.cancel()

    def close(self) -> None:
        """The room's call ends: nobody waits in it any more (an acknowledgement already on its
        way tells no one)."""
        self._closed = True
        self._end_wait()

    def _end_wait(self) -> None:
        """A clinician came (or the room ends): what the clinic was told is moot from now on."""
        for ack in self._clinic_acks.values():
            ack.cancel()
        self._clinic_acks.clear()
        self._clinic_told.clear()
