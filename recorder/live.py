"""Recording a live room: every published track as received, plus the room's events.

Plugs into the media plane's tap interface (media.taps): each track gets an
EncodedFrameTap (whole frames, bounded reassembly, no decoding) whose consumer
only enqueues. One writer thread per recording does the blocking work
(encryption, append, fdatasync) and seals idle segments. If storage fails or
cannot keep up, the recording stops with a clear reason and the call goes on.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from aiortc.codecs import depayload

from media.taps import EncodedFrameTap, TappedFrame

from .audit import AuditLog
from .errors import RecorderError
from .keys import KeyStore
from .manifest import TrackInfo
from .writer import RecordingWriter

logger = logging.getLogger(__name__)

QUEUE_ITEMS = 4096  # several seconds of a three-party room; beyond that the disk is not keeping up
FLUSH_INTERVAL_S = 0.25


class LiveRecording:
    def __init__(self, writer: RecordingWriter, *, session_ms_at: Callable[[float], int],
                 on_failure: Callable[[str], object]) -> None:
        self.writer = writer
        self.id = writer.id
        self.continues = writer.manifest.continues
        self.part = writer.manifest.part
        self._session_ms_at = session_ms_at
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=QUEUE_ITEMS)
        self._known_tracks: set[str] = set()
        self.failure: Optional[str] = None
        self.frames_queued = 0
        self._thread = threading.Thread(target=self._work, name=f"recorder-{self.id}", daemon=True)
        self._thread.start()

    @classmethod
    async def start(cls, data_dir: Path, *, room: str, actor: str, session_ms_at: Callable[[float], int],
                    on_failure: Callable[[str], object], continues: Optional[str] = None,
                    part: int = 1) -> "LiveRecording":
        """Create the recording (key, manifest, audit entry) off the event loop. Raises RecorderError.
        `continues`, `part`: it carries on that recording, cut short on another node, as its part."""
        def create() -> RecordingWriter:
            keys = KeyStore.open(data_dir, create=True)
            audit = AuditLog.open(data_dir, create=True)
            return RecordingWriter.start(data_dir, keys, room=room, audit=audit, actor=actor, continues=continues,
                                         part=part)

        writer = await asyncio.get_running_loop().run_in_executor(None, create)
        return cls(writer, session_ms_at=session_ms_at, on_failure=on_failure)

    # --- feeding (event loop) --------------------------------------------------------------

    def tap(self, track_id: str, request_keyframe: Callable[[], None]) -> EncodedFrameTap:
        """A tap for one participant's track; frames go to the writer thread."""
        async def consume(item: TappedFrame) -> None:
            self._put(("frame", track_id, item))

        return EncodedFrameTap(consume, request_keyframe=request_keyframe, name=f"record-{track_id}")

    async def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """An audit entry about this recording, written off the event loop. Raises RecorderError."""
        await self._loop.run_in_executor(None, self.writer.audit, actor, action, details)

    def event(self, timestamp_ms: int, event: dict[str, Any]) -> None:
        self._put(("event", timestamp_ms, event))

    def _put(self, item: tuple) -> None:
        if self.failure is not None:
            return
        try:
            self._queue.put_nowait(item)
            self.frames_queued += item[0] == "frame"
        except queue.Full:
            self._fail("storage is not keeping up with the media (write queue full)")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            self._on_failure(reason)

    async def stop(self) -> None:
        """Seal and close (final segments, stop event, audit). Waits for the writer thread."""
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                await asyncio.sleep(0.05)  # let the writer drain; it always makes progress or fails
        await self._loop.run_in_executor(None, self._thread.join)

    # --- writing (its own thread) ---------------------------------------------------------------

    def _work(self) -> None:
        writer = self.writer
        try:
            while True:
                try:
                    item = self._queue.get(timeout=FLUSH_INTERVAL_S)
                except queue.Empty:
                    writer.flush_idle()
                    continue
                if item is None:
                    writer.close()
                    return
                if item[0] == "event":
                    writer.write_event(item[1], item[2])
                else:
                    self._write_frame(item[1], item[2])
                writer.flush_idle()
        except (RecorderError, ValueError) as exc:
            logger.error("recording %s stopped: %s", self.id, exc)
            self._loop.call_soon_threadsafe(self._fail, str(exc))
            while self._queue.get() is not None:  # drain so nobody waits on a dead writer
                pass

    def _write_frame(self, track_id: str, item: TappedFrame) -> None:
        codec = item.codec
        if track_id not in self._known_tracks:
            self.writer.add_track(TrackInfo(track_id, codec.mimeType.split("/")[0], codec.name, codec.clockRate))
            self._known_tracks.add(track_id)
        frame = item.frame
        # the codec's own bitstream, as a decoder or muxer wants it
        data = b"".join(depayload(codec, payload) for payload in frame.payloads)
        self.writer.write_frame(track_id, self._session_ms_at(frame.completed_at), frame.rtp_timestamp,
                                frame.keyframe, data)
