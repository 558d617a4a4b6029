"""Clinical photos captured during a consultation, kept like a recording.

A capture session (e.g. frontal, left, right) is a recording of its own with an
image track: every still is one encrypted frame (the JPEG), and its pose and
metrics are an event beside it. So stills get the recordings' encryption, key
rotation, retention and audit without a second storage format.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .audit import AuditLog
from .keys import KeyStore
from .manifest import TrackInfo
from .writer import RecordingWriter

STILLS_TRACK = "stills"


class StillCapture:
    def __init__(self, writer: RecordingWriter) -> None:
        self.writer = writer
        self.id = writer.id
        self.count = 0
        self._lock = asyncio.Lock()  # one write at a time, in order

    @classmethod
    async def start(cls, data_dir: Path, *, room: str, actor: str) -> "StillCapture":
        def create() -> RecordingWriter:
            keys = KeyStore.open(data_dir, create=True)
            audit = AuditLog.open(data_dir, create=True)
            return RecordingWriter.start(data_dir, keys, room=room, audit=audit, actor=actor,
                                         tracks=[TrackInfo(STILLS_TRACK, "image", "jpeg")])

        return cls(await asyncio.get_running_loop().run_in_executor(None, create))

    async def save(self, timestamp_ms: int, jpeg: bytes, meta: dict) -> int:
        """Store one still; returns its index in this capture session. Raises RecorderError."""
        async with self._lock:
            index = self.count

            def write() -> None:
                self.writer.write_frame(STILLS_TRACK, timestamp_ms, 0, True, jpeg)
                self.writer.write_event(timestamp_ms, {"type": "still", "index": index, **meta})
                self.writer.flush_idle()

            await asyncio.get_running_loop().run_in_executor(None, write)
            self.count += 1
            return index

    async def close(self) -> None:
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
