"""What a webhook says: one event of a consultation, as the JSON body a receiver gets.

Bodies name participants by id, the identity the clinic put in the link, and role; never
by display name or token, so what waits in the outbox on disk identifies no patient by
itself (the clinic's identity maps back to its own records).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

EVENT_TYPES = (
    "room.started",
    "room.ended",
    "participant.joined",
    "participant.waiting",
    "participant.left",
    "recording.started",
    "recording.stopped",
    "recording.sealed",
    "capture.completed",
    "consent.given",
    "consent.refused",
)


def new_event_id() -> str:
    """Unique per event: the receiver's de-duplication key (delivery is at least once)."""
    return "evt_" + secrets.token_hex(12)


@dataclass(frozen=True)
class WebhookEvent:
    id: str  # unique per event: the receiver's de-duplication key (delivery is at least once)
    type: str
    created_at: float  # Unix seconds, when it happened (not when it was delivered)
    room_id: str
    room_instance: str
    data: dict

    @classmethod
    def new(cls, type: str, room_id: str, room_instance: str, data: dict,
            event_id: str | None = None) -> "WebhookEvent":
        """`event_id`: the one the room gave the event (signalling.room_events), so the room can
        learn when it was delivered (WebhookSender.acknowledged); a new one if None."""
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {type!r}")
        return cls(id=event_id or new_event_id(), type=type, created_at=round(time.time(), 3),
                   room_id=room_id, room_instance=room_instance, data=data)

    def body(self) -> bytes:
        return json.dumps({"id": self.id, "type": self.type, "created_at": self.created_at,
                           "room": {"id": self.room_id, "instance": self.room_instance}, "data": self.data},
                          separators=(",", ":"), ensure_ascii=False).encode()
