"""What a live room's frame processors find, relayed to its pages: `analysis` messages to the
roles they are for (and into the recording), the latest state-like ones again to pages that join
later, face landmarks for face-anchored marks (annotate/face_relay.py), and processor failures.
"""

from __future__ import annotations

import logging
from typing import Optional, Protocol

from annotate.board import AnnotationBoard
from annotate.face_relay import FaceLandmarkRelay, mesh_message
from media.processing import ProcessorEvent

from .registry import ParticipantRecord

logger = logging.getLogger(__name__)

STATEFUL_ANALYSIS = ("guidance", "capture")  # replayed to late joiners; metrics are not (they stream)


class AnalysedRoom(Protocol):
    """What the relay needs of its room (signalling.live_rooms.LiveRoom)."""

    def session_ms(self) -> int: ...

    def present(self) -> list[ParticipantRecord]: ...

    def send_to(self, participant_id: str, message: dict) -> None: ...

    def record_event(self, message: dict) -> None: ...


class RoomAnalysis:
    def __init__(self, room: AnalysedRoom, room_id: str, board: AnnotationBoard) -> None:
        """`board`: the room's annotations, whose face-anchored marks decide the landmarks relayed."""
        self._room = room
        self._room_id = room_id
        # face-anchored marks on the pages: the landmarks they need, and who has the mesh table
        self._face_relay = FaceLandmarkRelay(board)
        self._face_mesh_sent: set[str] = set()
        self._face_metrics: Optional[tuple[dict, Optional[frozenset[str]]]] = None  # the newest, and its roles
        # the latest state-like analysis messages, replayed to late joiners (by processor, kind)
        self._state: dict[tuple[str, str], tuple[dict, Optional[frozenset[str]]]] = {}

    def relay(self, processor: str, participant_id: str, event: ProcessorEvent) -> None:
        """media.processing.ProcessorHost's `sink`: one processor event, as an `analysis` message."""
        message = {"type": "analysis", "processor": processor, "participant": participant_id,
                   "t_ms": self._room.session_ms(), **event.data}
        self._room.record_event(message)
        if event.data.get("kind") in STATEFUL_ANALYSIS:
            self._state[(processor, event.data["kind"])] = (message, event.to_roles)
        if event.data.get("kind") == "face-metrics":
            self._send_face_metrics(message, event.to_roles)
            return
        for participant in self._room.present():
            if event.to_roles is None or participant.role in event.to_roles:
                self._room.send_to(participant.id, message)

    def _send_face_metrics(self, message: dict, to_roles: Optional[frozenset[str]], *,
                           only_landmarks: bool = False) -> None:
        """Metrics (all landmarks) to their roles; to everyone else, only while face-anchored
        marks exist, the few landmarks those marks need (annotate/face_relay.py). Not recorded:
        the recording keeps the metrics, which hold every landmark."""
        self._face_metrics = (message, to_roles)
        landmarks_only = self._face_relay.landmarks_message(message)
        for participant in self._room.present():
            metrics_role = to_roles is None or participant.role in to_roles
            wanted = (None if only_landmarks else message) if metrics_role else landmarks_only
            if wanted is None:
                continue
            if participant.id not in self._face_mesh_sent:  # the table, once, before any landmarks
                self._face_mesh_sent.add(participant.id)
                self._room.send_to(participant.id,
                                   mesh_message(message["processor"], message["participant"], message["t_ms"]))
            self._room.send_to(participant.id, wanted)

    def face_mark_added(self) -> None:
        """A new face-anchored mark (already on the board) may use landmarks the patient's
        page was not sent: send them now, from the newest metrics, rather than up to 200 ms
        later with the next."""
        if self._face_metrics is not None and self._room.session_ms() - self._face_metrics[0]["t_ms"] < 1000:
            self._send_face_metrics(*self._face_metrics, only_landmarks=True)

    def state_for(self, role: str) -> list[dict]:
        """What a page that joins now must know: the current prompt, the photo protocol's step."""
        return [message for message, roles in self._state.values() if roles is None or role in roles]

    def forget(self, participant_id: str) -> None:
        """That participant left: their page has no mesh table any more, their analysis is over."""
        self._face_mesh_sent.discard(participant_id)
        for key, (message, _) in list(self._state.items()):
            if message["participant"] == participant_id:
                del self._state[key]

    def processor_failed(self, processor: str, participant_id: str, error: str) -> None:
        """media.processing.ProcessorHost's `on_failure`: logged, and told to the clinicians."""
        logger.warning("processor %s failed on %s in room %s: %s", processor, participant_id, self._room_id, error)
        message = {"type": "processor-failed", "processor": processor, "participant": participant_id,
                   "error": error}
        for participant in self._room.present():
            if "moderate" in participant.permissions or participant.role in ("doctor", "expert"):
                self._room.send_to(participant.id, message)
