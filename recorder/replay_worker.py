"""The render process of one watermarked replay (started by recorder/replay_cache.py).

Why a process: the server forwards live media on one asyncio event loop. A render is
seconds of solid decoding, marking and encoding; in threads of the server process it
holds the GIL often enough to delay that loop by up to ~200 ms (docs/BENCHMARKS.md,
"Watermarked replays"), in its own process at nice RENDER_NICE it delays it by at most
a few ms. So the server only starts this process, reads its messages and serves the
file; everything that decrypts, marks or encodes happens here.

Steps: the audited open of the recording (purpose replay, the viewer as actor), the
plan (length, picture size: from the recording's stop event, else a pre-pass), a
watermark id issued for this viewer and participant (an audit entry, before any frame is
marked), then recorder/replay_render.py into the spool (recorder/replay_spool.py),
sealing up to each complete WebM element.

Priority. The trainer waits for the first seconds, and a render at nice RENDER_NICE on a
host busy with calls got so little CPU that they took a minute. So everything up to the
head (from the start until what can be served plays replay_render.HEAD_MS: the open,
the plan, the first pictures) runs at normal priority (HEAD_NICE), as the calls do, but
on one core only (the last one this process may use; every render's head on the same
one): the heads of every file being prepared get a guaranteed share, at most one core,
and the calls keep the others and their fair share of that one. Then every thread of the
process moves to nice RENDER_NICE on every core, the process says `head` and waits for
the server's `go` (a render slot of its own, `bulk_workers` at once, recorder/
replay_cache.py) before it renders the rest.

Warm start. Interpreter start and imports (PyAV, numpy, the marks' fonts) are about
0.45 s of CPU, as much as the head's pictures: the server starts spare processes ahead
(when a trainer lists or opens recordings), which load everything and wait for their
request on stdin.

Protocol: `python -m recorder.replay_worker` reads one JSON request (RenderRequest; the
spool key in hex) from stdin, never from its command line or environment, and writes
JSON lines to stdout (C libraries' stray output goes to stderr instead):
    ["ready"]                               (loaded; it reads its request now)
    ["plan", {start_ms, duration_ms, width, height, has_audio}]
    ["watermark", "1a2b3c4d"]
    ["data", [record ends], [[ms, offset] new points], init_bytes, rendered_ms, servable_ms]
    ["progress", rendered_ms]
    ["head", {ms, nice, nice_after, cpus, cpus_after, cpu_s}]   (servable ms; then it reads "go")
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Optional

from watermark.registry import WatermarkRegistry

from . import replay_render
from .audit import Action, AuditLog
from .errors import KeyUnavailableError, RecorderError, RecordingIntegrityError, RecordingNotFoundError
from .keys import DATA_KEY_FILE, KeyStore
from .manifest import Manifest
from .replay_spool import SpoolWriter
from .store import RecordingStore
from .watermark_store import load_key
from .webm import MediaGroup, media_groups, merge_groups
from .webm_index import ClusterIndex

PROGRESS_EVERY_S = 0.1
CHECK_EVERY_S = 1.0
CPU_USED_ENV = "CONSULT_REPLAY_CPU_USED"  # libvpx speed for replays (benchmarks: loadtest/bench_replay.py)
HEAD_NICE_ENV = "CONSULT_REPLAY_HEAD_NICE"  # the head's nice value (benchmarks), else replay_render.HEAD_NICE


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
    members: tuple[str, ...] = ()  # one person's joins: the media groups played as one (webm.person_groups)

    def to_json(self) -> bytes:
        fields = dataclasses.asdict(self)
        fields.update(spool_key=self.spool_key.hex(), spool_file_id=self.spool_file_id.hex(),
                      environ=dict(self.environ))
        return json.dumps(fields).encode() + b"\n"

    @classmethod
    def from_json(cls, line: bytes) -> "RenderRequest":
        fields = json.loads(line)
        fields.update(spool_key=bytes.fromhex(fields["spool_key"]),
                      spool_file_id=bytes.fromhex(fields["spool_file_id"]),
                      members=tuple(fields.get("members") or ()))
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
    """What the muxer writes to: the spool, sealed (and announced) up to each complete element.
    `on_head` is called once, from the render's loop, when the head can be served."""

    def __init__(self, writer: SpoolWriter, conn: Channel, on_head: Callable[[int], None] = lambda ms: None) -> None:
        self.writer, self.conn = writer, conn
        self.index = ClusterIndex()
        self.rendered_ms = 0
        self._points_sent = 0
        self._progress_at = 0.0
        self._on_head: Optional[Callable[[int], None]] = on_head

    def write(self, data: bytes) -> int:
        self.writer.append(data)
        self.index.feed(data)
        if self.index.complete_bytes > self.writer.sealed:
            ends = self.writer.seal(self.index.complete_bytes)
            points = self.index.points[self._points_sent:]
            self._points_sent = len(self.index.points)
            self.conn.send(("data", ends, points, self.index.init_bytes, self.rendered_ms, self.index.complete_ms))
        return len(data)

    def servable_ms(self) -> int:
        """How far what has been sealed plays (every complete cluster is sealed at once)."""
        return self.index.complete_ms

    def progress(self, ms: int) -> None:
        self.rendered_ms = ms
        now = time.monotonic()
        if now - self._progress_at >= PROGRESS_EVERY_S:
            self._progress_at = now
            self.conn.send(("progress", ms))
        if self._on_head is not None:
            servable = self.servable_ms()
            if servable >= replay_render.HEAD_MS - replay_render.HEAD_SLACK_MS:
                on_head, self._on_head = self._on_head, None
                on_head(servable)


def head_cpus() -> Optional[set[int]]:
    """The one core every render's head runs on: the last this process may use (None: no affinity here)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return {allowed[-1]} if len(allowed) > 1 else None


def _pin(cpus: Optional[set[int]], *, every_thread: bool) -> None:
    """This thread (and so the threads it starts later), or every thread of the process, onto `cpus`."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return
    tasks = [0]
    if every_thread:
        try:
            tasks = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            pass
    for tid in tasks:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # ended meanwhile


def preload() -> None:
    """What a render imports on its way (the marks, their fonts), loaded while nobody waits."""
    import watermark.embed  # noqa: F401  (media.fonts, matplotlib's FreeType)


def thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # Linux: the calling thread's


def lower_priority(nice: int) -> None:
    """Every thread of this process to `nice` (on Linux a thread's nice value is its own: os.nice
    would move the calling thread only); threads started later inherit their creator's."""
    try:
        tasks = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tasks = [0]
    for tid in tasks:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
        except OSError:
            pass  # ended meanwhile


class Head:
    """The priority path: at normal priority until the head can be served, then low priority and a
    wait for the server's go-ahead (one line on stdin; end of input: stop)."""

    def __init__(self, conn: Channel, commands: BinaryIO, every_cpu: Optional[set[int]] = None,
                 head_cpu: Optional[set[int]] = None) -> None:
        self.conn, self.commands = conn, commands
        self.every_cpu, self.head_cpu = every_cpu, head_cpu

    def __call__(self, servable_ms: int) -> None:
        before = thread_nice()
        lower_priority(replay_render.RENDER_NICE)
        _pin(self.every_cpu, every_thread=True)
        self.conn.send(("head", {"ms": servable_ms, "nice": before, "nice_after": thread_nice(),
                                 "cpus": sorted(self.head_cpu) if self.head_cpu else None,
                                 "cpus_after": sorted(os.sched_getaffinity(0)) if self.every_cpu else None,
                                 "cpu_s": round(time.process_time(), 3)}))
        if not self.commands.readline().strip():
            raise replay_render.RenderStopped("the server stopped the render")


def main() -> int:
    """The process: never raises; the outcome is the last message."""
    messages = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else written to stdout (a C library) must not corrupt the messages
    conn = Channel(messages)
    every_cpu = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    head_cpu = head_cpus()
    _pin(head_cpu, every_thread=True)
    try:
        lower_priority(int(os.environ.get(HEAD_NICE_ENV, replay_render.HEAD_NICE)))
    except ValueError:
        pass
    try:
        preload()
        conn.send(("ready",))
        request = RenderRequest.from_json(sys.stdin.buffer.readline())
        stats = _render(request, conn, Head(conn, sys.stdin.buffer, every_cpu, head_cpu))
        conn.send(("done", stats))
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported, the process ends either way
        try:
            conn.send(("failed", *failure(exc)))
        except (OSError, ValueError):
            pass  # the server is gone
        return 1


def _group(manifest: Manifest, key: str, members: tuple[str, ...]) -> Optional[MediaGroup]:
    """The media group `key`, or, with `members`, those groups merged (one person's joins)."""
    groups = {g.key: g for g in media_groups(manifest)}
    if not members:
        return groups.get(key)
    if members[0] != key or any(m not in groups for m in members):
        return None
    return merge_groups([groups[m] for m in members]) if len(members) > 1 else groups[key]


def _render(request: RenderRequest, conn: Channel, head: Head) -> dict[str, Any]:
    data_dir, environ = Path(request.data_dir), dict(request.environ)
    if environ.get(CPU_USED_ENV):
        replay_render.ENCODER_OPTIONS["cpu-used"] = environ[CPU_USED_ENV]
    audit = AuditLog.open(data_dir, environ=environ, create=True)
    store = RecordingStore(data_dir, keys=KeyStore.open(data_dir, environ=environ), audit=audit)
    reader = store.open_reader(request.recording_id, actor=request.viewer, purpose=Action.REPLAY)
    group = _group(reader.manifest, request.group_key, request.members)
    if group is None:
        raise RecordingNotFoundError(f"no media {request.group_key!r} in this recording")
    plan = replay_render.plan(reader, group, reader.stop_event())
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
        sink = _Sink(writer, conn, head)
        stats = replay_render.render(reader, group, plan, sink, mark=mark, progress=sink.progress,
                                     should_stop=should_stop)
        ends = writer.finish()
        if ends:
            conn.send(("data", ends, sink.index.points[sink._points_sent:], sink.index.init_bytes, plan.duration_ms,
                       sink.index.complete_ms))
    finally:
        writer.close()
    return {**dataclasses.asdict(stats), "cpu_s": time.process_time()}


def _unmarked(image: Any, at_ms: int) -> None:
    pass  # sound only: there is no picture to mark


if __name__ == "__main__":
    sys.exit(main())
