"""What happened in consultations, told to whoever listens (the webhook sender today).

The room code says what happened once, here; listeners decide what to do with it. A
listener that fails is logged and the call goes on. Events and their data are listed in
webhooks/events.py and docs/DEPLOY.md ("Webhooks").

Each event gets its id here, so the room can ask whether the clinic's systems took it
(`acknowledged`): the waiting patient is told the clinic knows only once it does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Optional, Protocol

from webhooks.events import new_event_id

from .registry import ParticipantRecord, RoomRecord

logger = logging.getLogger(__name__)

# event id -> done when the clinic's systems took that event (webhooks.WebhookSender.acknowledged)
Acknowledger = Callable[[str], asyncio.Future[None]]


class RoomEventListener(Protocol):
    def __call__(self, type: str, room_id: str, room_instance: str, data: dict, event_id: str) -> None: ...


class RoomEvents:
    def __init__(self) -> None:
        self._listeners: list[RoomEventListener] = []
        self._acknowledger: Optional[Acknowledger] = None

    def subscribe(self, listener: RoomEventListener, acknowledger: Optional[Acknowledger] = None) -> None:
        """`acknowledger`: the listener can tell when an event reached the clinic (the webhook sender)."""
        self._listeners.append(listener)
        if acknowledger is not None:
            self._acknowledger = acknowledger

    def emit(self, type: str, room: RoomRecord, data: dict) -> str:
        """Tells every listener; the event's id."""
        event_id = new_event_id()
        for listener in self._listeners:
            try:
                listener(type, room.id, room.instance, data, event_id)
            except Exception:  # the consultation matters more than its report
                logger.exception("a room-event listener failed on %s", type)
        return event_id

    def acknowledged(self, event_id: str) -> Optional[asyncio.Future[None]]:
        """Done when the clinic's systems took the event (a webhook answered 2xx); cancel it to stop
        waiting. None when nothing can tell (no webhook configured): then nobody may claim they did."""
        if self._acknowledger is None:
            return None
        return self._acknowledger(event_id)


def participant_data(participant: ParticipantRecord) -> dict:
    """How events name a participant: never by display name or token (webhooks/events.py)."""
    return {"id": participant.id, "identity": participant.identity, "role": participant.role}
