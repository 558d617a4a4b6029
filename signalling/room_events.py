"""What happened in consultations, told to whoever listens (the webhook sender today).

The room code says what happened once, here; listeners decide what to do with it. A
listener that fails is logged and the call goes on. Events and their data are listed in
webhooks/events.py and docs/DEPLOY.md ("Webhooks").
"""

from __future__ import annotations

import logging
from typing import Protocol

from .registry import ParticipantRecord, RoomRecord

logger = logging.getLogger(__name__)


class RoomEventListener(Protocol):
    def __call__(self, type: str, room_id: str, room_instance: str, data: dict) -> None: ...


class RoomEvents:
    def __init__(self) -> None:
        self._listeners: list[RoomEventListener] = []

    def subscribe(self, listener: RoomEventListener) -> None:
        self._listeners.append(listener)

    def emit(self, type: str, room: RoomRecord, data: dict) -> None:
        for listener in self._listeners:
            try:
                listener(type, room.id, room.instance, data)
            except Exception:  # the consultation matters more than its report
                logger.exception("a room-event listener failed on %s", type)


def participant_data(participant: ParticipantRecord) -> dict:
    """How events name a participant: never by display name or token (webhooks/events.py)."""
    return {"id": participant.id, "identity": participant.identity, "role": participant.role}
