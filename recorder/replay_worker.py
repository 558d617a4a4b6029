"""The render process of one watermarked replay (started by recorder/replay_cache.py).

Why a process: the server forwards live media on one asyncio event loop. A render is
seconds of solid decoding, marking and encoding; in threads of the server process it
holds the GIL often enough to delay that loop by up to ~200 ms (docs/BENCHMARKS.md,
"Watermarked replays"), in its own process at nice RENDER_NICE it delays it by at most
a few ms. So the server only starts this process, reads its messages and serves the
file; everything that decrypts, marks or encodes happens here.

Steps: the audited open of the recording (purpose replay, the viewer as actor), the
pre-pass (length, picture size), a watermark id issued for this viewer and participant
(an audit entry, before any frame is marked), then recorder/replay_render.py into the
spool (recorder/replay_spool.py), sealing up to each complete WebM element.

Protocol: `python -m recorder.replay_worker` reads one JSON request (RenderRequest; the
spool key in hex) from stdin, never from its command line or environment, and writes
JSON lines to stdout (C libraries' stray output goes to stderr instead):
    ["plan", {start_ms, duration_ms, width, height, has_audio}]
    ["watermark", "1a2b3c4d"]
    ["data", [record ends], [[ms, offset] new points], init_bytes, rendered_ms]
    ["progress", rendered_ms]
    ["done", {stats}]
    ["failed", code, message]
It stops when the recording is purged or the server is gone; the server stops it by
terminating it. (Not multiprocessing: its children import the parent's __main__.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from watermark.registry import WatermarkRegistry

from . import replay_render
from .audit import Action, AuditLog
from .errors import KeyUnavailableError, RecorderError, RecordingIntegrityError, RecordingNotFoundError
from .keys import DATA_KEY_FILE, KeyStore
from .replay_spool import SpoolWriter
from .store import RecordingStore
from .watermark_store import load_key
from .webm import media_groups
from .webm_index import ClusterIndex

PROGRESS_EVERY_S = 0.1
CHECK_EVERY_S = 1.0


@dataclasses.dataclass(frozen=True)
class RenderRequest:
    data_dir: str
    recording_id: str
    group_key: str
    viewer: str
    viewer_name: str
    spool_path: str
    spool_key: bytes
    spool_file_id: bytes
    environ: Mapping[str, str]   # CONSULT_* of the server: where the keys are

    def to_json(self) -> bytes:
        fields = dataclasses.asdict(self)
        fields.update(spool_key=self.spool_key.hex(), spool_file_id=self.spool_file_id.hex(),
                      environ=dict(self.environ))
        return json.dumps(fields).encode() + b"\n"

    @classmethod
    def from_json(cls, line: bytes) -> "RenderRequest":
        fields = json.loads(line)
        fields.update(spool_key=bytes.fromhex(fields["spool_key"]),
                      spool_file_id=bytes.fromhex(fields["spool_file_id"]))
        return cls(**fields)


class Channel:
    """JSON lines to the server."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def send(self, message: tuple) -> None:
        self.out.write(json.dumps(message).encode() + b"\n")
        self.out.flush()


def failure(exc: BaseException) -> tuple[str, str]:
    """(code, message) the server reports for an exception of a render."""
    known = ((RecordingNotFoundError, "not_found", ""),
             (RecordingIntegrityError, "tampered", "the recording fails authentication: "),
             (KeyUnavailableError, "unreadable", "the recording cannot be opened: "),
             (replay_render.RenderStopped, "stopped", ""),
             (replay_render.RenderError, "render_failed", ""),
             (RecorderError, "unavailable", ""))  # e.g. the audit log cannot be written: nothing is shown
    for kind, code, prefix in known:
        if isinstance(exc, kind):
            return code, f"{prefix}{exc}"
    return "render_failed", f"the replay could not be prepared: {type(exc).__name__}: {exc}"


class _Sink:
    """What the muxer writes to: the spool, sealed (and announced) up to each complete element."""

    def __init__(self, writer: SpoolWriter, conn: Channel) -> None:
        self.writer, self.conn = writer, conn
        self.index = ClusterIndex()
        self.rendered_ms = 0
        self._points_sent = 0
        self._progress_at = 0.0

    def write(self, data: bytes) -> int:
        self.writer.append(data)
        self.index.feed(data)
        if self.index.complete_bytes > self.writer.sealed:
            ends = self.writer.seal(self.index.complete_bytes)
            points = self.index.points[self._points_sent:]
            self._points_sent = len(self.index.points)
            self.conn.send(("data", ends, points, self.index.init_bytes, self.rendered_ms))
        return len(data)

    def progress(self, ms: int) -> None:
        self.rendered_ms = ms
        now = time.monotonic()
        if now - self._progress_at >= PROGRESS_EVERY_S:
            self._progress_at = now
            self.conn.send(("progress", ms))


def main() -> int:
    """The process: never raises; the outcome is the last message."""
    messages = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else written to stdout (a C library) must not corrupt the messages
    conn = Channel(messages)
    try:
        os.nice(replay_render.RENDER_NICE)  # the whole process: live media on this host comes first
    except OSError:
        pass
    try:
        request = RenderRequest.from_json(sys.stdin.buffer.readline())
        stats = _render(request, conn)
        conn.send(("done", stats))
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported, the process ends either way
        try:
            conn.send(("failed", *failure(exc)))
        except (OSError, ValueError):
            pass  # the server is gone
        return 1


CPU_USED_ENV = "CONSULT_REPLAY_CPU_USED"  # libvpx speed for replays (benchmarks: loadtest/bench_replay.py)


def _render(request: RenderRequest, conn: Channel) -> dict[str, Any]:
    data_dir, environ = Path(request.data_dir), dict(request.environ)
    if environ.get(CPU_USED_ENV):
        replay_render.ENCODER_OPTIONS["cpu-used"] = environ[CPU_USED_ENV]
    audit = AuditLog.open(data_dir, environ=environ, create=True)
    store = RecordingStore(data_dir, keys=KeyStore.open(data_dir, environ=environ), audit=audit)
    reader = store.open_reader(request.recording_id, actor=request.viewer, purpose=Action.REPLAY)
    group = next((g for g in media_groups(reader.manifest) if g.key == request.group_key), None)
    if group is None:
        raise RecordingNotFoundError(f"no media {request.group_key!r} in this recording")
    plan = replay_render.plan(reader, group)
    if plan is None:
        raise RecordingNotFoundError("this participant's tracks hold no playable media")
    conn.send(("plan", dataclasses.asdict(plan)))
    mark = _unmarked
    if plan.has_video:
        registry = WatermarkRegistry(audit, load_key(data_dir, environ=environ, create=True))
        issued = registry.issue(viewer=request.viewer, viewer_name=request.viewer_name, purpose="replay",
                                recording_id=request.recording_id, actor=request.viewer,
                                details={"participant": request.group_key, "format": plan.content_type,
                                         "size": f"{plan.width}x{plan.height}"})
        conn.send(("watermark", issued.hex_id))
        mark = registry.watermarker(issued).mark_i420

    key_file = data_dir / "recordings" / request.recording_id / DATA_KEY_FILE
    parent = os.getppid()
    checked = [time.monotonic()]

    def should_stop() -> bool:
        now = time.monotonic()
        if now - checked[0] < CHECK_EVERY_S:
            return False
        checked[0] = now
        return os.getppid() != parent or not key_file.exists()  # the server died; the recording was purged

    writer = SpoolWriter(Path(request.spool_path), request.spool_key, request.spool_file_id)
    try:
        sink = _Sink(writer, conn)
        stats = replay_render.render(reader, group, plan, sink, mark=mark, progress=sink.progress,
                                     should_stop=should_stop)
        ends = writer.finish()
        if ends:
            conn.send(("data", ends, sink.index.points[sink._points_sent:], sink.index.init_bytes, plan.duration_ms))
    finally:
        writer.close()
    return {**dataclasses.asdict(stats), "cpu_s": time.process_time()}


def _unmarked(image: Any, at_ms: int) -> None:
    pass  # sound only: there is no picture to mark


if __name__ == "__main__":
    sys.exit(main())
