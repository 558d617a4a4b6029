"""Watermarked replays being prepared or kept for a while: one per (recording,
participant, viewer), started on first request and served while it grows.

Each replay is rendered by its own process (recorder/replay_worker.py: the audited
open, a watermark id issued to the viewer, decode -> mark -> encode), so the server's
event loop never waits for a render; this module starts those processes (at most
`workers` at once, the others "queued"), follows their messages and reads what they
wrote: a SpoolReader over `<data dir>/replay-cache/<recording id>/<random>.webm.sealed`,
encrypted under a key made here, passed to the render process through a pipe and
never written anywhere.

Lifetime. A finished replay is kept `ttl_s` after its last use (the same viewer
reopening it gets the same file and id); a render nobody has asked about for `idle_s`
(the page polls while it waits) is stopped; the cache is capped at `max_bytes` (least
recently used finished replays go first). A purge (`RecordingStore.purge` calls
`remove_recording_cache`) deletes the recording's directory: render processes stop when
the recording's data key is gone, the server drops the replays on the next request or
sweep. The whole cache is wiped when the service starts: its keys died with the
previous process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import replay_spool
from .errors import RecorderError, RecordingNotFoundError
from .fsutil import make_private_dir
from .keys import DATA_KEY_FILE
from .manifest import is_recording_id
from .replay_spool import SpoolReader

log = logging.getLogger(__name__)

REPLAY_CACHE_DIR = "replay-cache"
WORKERS = 2                     # renders at once: two fill a 2-core host (docs/BENCHMARKS.md)
TTL_S = 3600.0
IDLE_S = 120.0
FAILED_TTL_S = 30.0
MAX_BYTES = 8 << 30
ENV_PREFIX = "CONSULT_"
STOP_GRACE_S = 2.0


def cache_root(data_dir: Path) -> Path:
    return data_dir / REPLAY_CACHE_DIR


def remove_recording_cache(data_dir: Path, recording_id: str) -> bool:
    """Deletes every cached replay of the recording (a purge). True if there was any."""
    if not is_recording_id(recording_id):
        return False
    path = cache_root(data_dir) / recording_id
    existed = path.exists()
    shutil.rmtree(path, ignore_errors=True)
    return existed


def recording_present(data_dir: Path, recording_id: str) -> bool:
    """False once the recording is purged (its data key is destroyed first)."""
    return (data_dir / "recordings" / recording_id / DATA_KEY_FILE).exists()


REPO_ROOT = Path(__file__).resolve().parent.parent


def _worker_command() -> list[str]:
    return [sys.executable, "-m", "recorder.replay_worker"]


@dataclass
class JobFailure:
    code: str      # not_found | tampered | unreadable | unavailable | render_failed | crashed
    message: str


class ReplayJob:
    """One viewer's watermarked replay of one participant. State moves queued -> rendering ->
    ready, or to failed / stopped. Updated by its own thread, read from any."""

    def __init__(self, recording_id: str, group_key: str, viewer: str, viewer_name: str, path: Path,
                 now: float) -> None:
        self.recording_id, self.group_key = recording_id, group_key
        self.viewer, self.viewer_name = viewer, viewer_name
        self.path = path
        self.state = "queued"
        self.failure: Optional[JobFailure] = None
        self.watermark: Optional[str] = None
        self.plan: Any = None                    # replay_render.RenderPlan once known
        self.rendered_ms = 0
        self.stats: Optional[dict[str, Any]] = None
        self.last_used = now
        self.stop = threading.Event()
        self.spool: Optional[SpoolReader] = None
        self.points: list[tuple[int, int]] = []  # (ms, offset) of clusters playback may start at
        self.init_bytes: Optional[int] = None
        self._process: Any = None
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, str, str]:
        return self.recording_id, self.group_key, self.viewer

    def readable(self) -> tuple[int, Optional[int]]:
        """(bytes that may be served, total size once finished)."""
        with self._lock:
            spool, state = self.spool, self.state
        size = spool.size if spool is not None else 0
        if state == "ready":
            return size, size
        return (size, None) if state == "rendering" else (0, None)

    def read(self, first: int, end: int) -> bytes:
        with self._lock:
            spool = self.spool
        if spool is None:
            raise RecorderError("nothing rendered yet")
        return spool.read(first, end)

    def status(self, since: int = 0) -> dict[str, Any]:
        ready, size = self.readable()
        with self._lock:
            points = self.points[max(0, since):]
            n_points, init = len(self.points), self.init_bytes
        plan = self.plan
        duration = plan.duration_ms if plan is not None else None
        progress = 1.0 if self.state == "ready" else (min(0.999, self.rendered_ms / duration) if duration else 0.0)
        out: dict[str, Any] = {
            "state": self.state, "progress": round(progress, 4), "rendered_ms": self.rendered_ms,
            "duration_ms": duration, "ready_bytes": ready, "size": size, "init_bytes": init,
            "points": [list(p) for p in points], "points_from": max(0, since), "points_total": n_points,
            "watermark": self.watermark,
        }
        if plan is not None:
            out.update(content_type=plan.content_type, mime=plan.mime, width=plan.width, height=plan.height)
        if self.failure is not None:
            out["error"] = {"code": self.failure.code, "message": self.failure.message}
        return out

    def disk_bytes(self) -> int:
        spool = self.spool
        return spool.disk_bytes() if spool is not None else 0

    def discard(self) -> None:
        """Stops its render (if any) and deletes its file."""
        self.stop.set()
        with self._lock:
            spool, process = self.spool, self._process
        if process is not None and process.poll() is None:
            process.terminate()
        if spool is not None:
            spool.remove()
        else:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


class ReplayRenders:
    """The replays of one server process."""

    def __init__(self, data_dir: Path, *, environ: Mapping[str, str] = os.environ, workers: int = WORKERS,
                 ttl_s: float = TTL_S, idle_s: float = IDLE_S, max_bytes: int = MAX_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir.resolve()
        self.root = cache_root(self.data_dir)
        # Render processes find the keys where the server does (environment or data directory).
        self._environ = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
        self.ttl_s, self.idle_s, self.max_bytes = ttl_s, idle_s, max_bytes
        self._clock = clock
        self._slots = threading.BoundedSemaphore(workers)
        self._jobs: dict[tuple[str, str, str], ReplayJob] = {}
        self._lock = threading.Lock()
        self.started = 0  # renders begun (tests, monitoring)
        shutil.rmtree(self.root, ignore_errors=True)  # the previous process's files: undecryptable now
        make_private_dir(self.root)

    # -- jobs --------------------------------------------------------------------------------------

    def job(self, recording_id: str, group_key: str, viewer: str, viewer_name: str) -> ReplayJob:
        """The viewer's replay of that participant: the existing one, or a new render started now.
        Raises RecordingNotFoundError once the recording is purged."""
        if not recording_present(self.data_dir, recording_id):
            self.drop_recording(recording_id)
            raise RecordingNotFoundError(f"no recording {recording_id}")
        now = self._clock()
        key = (recording_id, group_key, viewer)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.state in ("failed", "stopped") and now - job.last_used > FAILED_TTL_S:
                del self._jobs[key]  # a failure is reported for a while, then tried again
                job = None
            if job is None:
                job = ReplayJob(recording_id, group_key, viewer, viewer_name or viewer,
                                self.root / recording_id / f"{secrets.token_hex(8)}.webm.sealed", now)
                self._jobs[key] = job
                self.started += 1
                threading.Thread(target=self._run, args=(job,), name=f"replay-{group_key}", daemon=True).start()
            job.last_used = now
        return job

    def jobs(self) -> list[ReplayJob]:
        with self._lock:
            return list(self._jobs.values())

    def _drop(self, job: ReplayJob) -> None:
        with self._lock:
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]
            others = any(j.recording_id == job.recording_id for j in self._jobs.values())
        job.discard()
        if not others:
            try:
                (self.root / job.recording_id).rmdir()
            except OSError:
                pass  # not empty (a render still closing) or already gone

    def drop_recording(self, recording_id: str) -> None:
        for job in [j for j in self.jobs() if j.recording_id == recording_id]:
            self._drop(job)

    def sweep(self) -> None:
        """Stops renders nobody waits for, drops expired replays and purged recordings' ones,
        and keeps the cache under its size cap."""
        now = self._clock()
        present: dict[str, bool] = {}
        for job in self.jobs():
            alive = present.setdefault(job.recording_id, recording_present(self.data_dir, job.recording_id))
            idle = now - job.last_used
            if (not alive or (job.state in ("queued", "rendering") and idle > self.idle_s)
                    or (job.state == "ready" and idle > self.ttl_s)
                    or (job.state in ("failed", "stopped") and idle > FAILED_TTL_S)):
                self._drop(job)
        finished = sorted((j for j in self.jobs() if j.state == "ready"), key=lambda j: j.last_used)
        total = sum(j.disk_bytes() for j in self.jobs())
        for job in finished:
            if total <= self.max_bytes:
                break
            total -= job.disk_bytes()
            self._drop(job)

    def close(self) -> None:
        for job in self.jobs():
            self._drop(job)

    # -- one render: a process, followed from a thread -----------------------------------------

    def _run(self, job: ReplayJob) -> None:
        with self._slots:
            if job.stop.is_set():  # dropped while it waited for a slot
                job.state = "stopped"
                return
            job.state = "rendering"
            try:
                self._follow(job)
            except (OSError, RecorderError, ValueError) as exc:
                self._fail(job, "unavailable", f"the replay could not be prepared: {exc}")
            finally:
                process = job._process
                if process is not None:
                    try:
                        process.wait(STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()

    def _follow(self, job: ReplayJob) -> None:
        from .replay_render import RenderPlan
        from .replay_worker import RenderRequest

        make_private_dir(job.path.parent)
        replay_spool.create(job.path)
        key, file_id = replay_spool.new_secret()
        spool = SpoolReader(job.path, key, file_id)
        with job._lock:
            job.spool = spool
        request = RenderRequest(str(self.data_dir), job.recording_id, job.group_key, job.viewer, job.viewer_name,
                                str(job.path), key, file_id, self._environ)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        with job._lock:
            if job.stop.is_set():
                job.state = "stopped"
                return
            # The key goes through the pipe: never on a command line or in an environment.
            process = subprocess.Popen(_worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                       cwd=REPO_ROOT, close_fds=True)
            job._process = process
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None and stdout is not None  # both are PIPEs
        try:
            stdin.write(request.to_json())
            stdin.close()
        except OSError:
            pass  # it died at once: its exit code says so below
        with stdout:
            for line in stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if self._handle(job, spool, message, RenderPlan):
                    return
        # The process ended without a verdict: stopped by us, or it died.
        process.wait()
        if job.stop.is_set():
            job.state = "stopped"
            job.discard()
        else:
            self._fail(job, "crashed", f"the render process ended unexpectedly (exit code {process.returncode})")

    def _handle(self, job: ReplayJob, spool: SpoolReader, message: list, plan_type: Any) -> bool:
        """One message of the render process; True once it has given its verdict."""
        kind = message[0]
        if kind == "plan":
            job.plan = plan_type(**message[1])
        elif kind == "watermark":
            job.watermark = message[1]
        elif kind == "progress":
            job.rendered_ms = message[1]
        elif kind == "data":
            _, ends, points, init_bytes, rendered_ms = message
            spool.add(ends)
            with job._lock:
                job.points.extend((int(t), int(o)) for t, o in points)
                job.init_bytes = init_bytes
            job.rendered_ms = max(job.rendered_ms, rendered_ms)
        elif kind == "done":
            job.stats = message[1]
            with job._lock:
                job.rendered_ms = job.plan.duration_ms if job.plan else job.rendered_ms
                job.state = "ready"
            return True
        elif kind == "failed":
            if job.stop.is_set() or message[1] == "stopped":
                job.state = "stopped"
                job.discard()
            else:
                self._fail(job, message[1], message[2])
            return True
        return False

    def _fail(self, job: ReplayJob, code: str, message: str) -> None:
        if code in ("render_failed", "crashed", "unavailable"):
            log.error("watermarked replay of %s/%s for %s failed: %s", job.recording_id, job.group_key, job.viewer,
                      message)
        job.failure = JobFailure(code, message)
        job.state = "failed"
        job.discard()
