"""Guided clinical photos in a live room: the face-analysis processor runs the photo protocol
on the patient's video, and each still it keeps is stored in a capture record (recorder/stills.py)
that closes when the protocol is done, is stopped, or loses its patient.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Protocol

from media.processors.face_processor import DEFAULT_PROTOCOL
from recorder.errors import RecorderError
from recorder.stills import StillCapture

from .registry import ParticipantRecord


class CapturedRoom(Protocol):
    """What photo captures need of their room (signalling.live_rooms.LiveRoom)."""

    def session_ms(self) -> int: ...

    def broadcast(self, message: dict, exclude: Optional[str] = None) -> None: ...

    def emit(self, type: str, data: dict) -> str: ...


class RoomCaptures:
    def __init__(self, room: CapturedRoom, data_dir: Path, *, label: str, face_analysis: Callable[[dict], int],
                 on_failure: Callable[[str, str, str], None]) -> None:
        """`label`: how capture records name the room (recorder.manifest.room_label);
        `face_analysis`: sends a command to the room's face-analysis processors, returns how many
        got it; `on_failure(processor, participant_id, error)`: a still could not be stored."""
        self._room = room
        self._data_dir = data_dir
        self._label = label
        self._face_analysis = face_analysis
        self._on_failure = on_failure
        self.capture: Optional[StillCapture] = None  # the record the running protocol stores into

    async def start(self, by: ParticipantRecord, poses: Optional[list[str]], tolerance_deg: float) -> str:
        """Start the photo protocol on the patient's analysed video; returns the capture's id.
        Raises LookupError when no patient video is analysed, RecorderError."""
        if self.capture is None:
            self.capture = await StillCapture.start(self._data_dir, room=self._label, actor=by.identity)
        # None would read as "stop" to the processor: an omitted list means the standard protocol
        command = {"capture": list(poses or DEFAULT_PROTOCOL), "tolerance_deg": tolerance_deg}
        if self._face_analysis(command) == 0:
            await self.end()
            raise LookupError("no patient video is being analysed (is the patient here, with face analysis on?)")
        return self.capture.id

    def stop(self) -> bool:
        """Ask the protocol to stop (its `stopped` event then closes the record); False if none runs."""
        return self._face_analysis({"capture": None}) > 0

    def keep(self, processor: str, participant_id: str, kind: str, data: bytes, meta: dict) -> None:
        """media.processing.ProcessorHost's `keep`: a processor hands over a still to store."""
        if kind == "still" and self.capture is not None:
            capture = self.capture
            stamp = self._room.session_ms()

            async def save() -> None:
                try:
                    await capture.save(stamp, data, {**meta, "participant": participant_id})
                except RecorderError as exc:
                    self._on_failure(processor, participant_id, f"a still could not be stored: {exc}")

            asyncio.ensure_future(save())

    def analysis_event(self, data: dict) -> None:
        """A processor's event: the protocol's end (done, or stopped) closes the record."""
        if data.get("kind") == "capture" and data.get("state") in ("done", "stopped"):
            asyncio.ensure_future(self.end())

    async def patient_left(self, participant_id: str) -> None:
        """`participant_id` left and no video is analysed any more: the patient whose photos were
        being taken is gone, so a running protocol ends, where everyone sees it."""
        if self.capture is None:
            return
        self._room.broadcast({"type": "analysis", "processor": "face-analysis", "participant": participant_id,
                              "t_ms": self._room.session_ms(), "kind": "capture", "state": "stopped", "pose": None,
                              "remaining": []})
        await self.end()

    async def end(self) -> None:
        """Close the capture record, if one is open."""
        capture, self.capture = self.capture, None
        if capture is not None:
            await capture.close()  # after the saves queued before it (one lock, in order)
            self._room.emit("capture.completed", {"capture_id": capture.id, "stills": capture.count})
