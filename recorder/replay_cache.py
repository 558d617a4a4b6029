"""Watermarked replays being prepared or kept for a while: one per (recording,
participant, viewer), started on first request and served while it grows.

Each replay is rendered by its own process (recorder/replay_worker.py: the audited
open, a watermark id issued to the viewer, decode -> mark -> encode), so the server's
event loop never waits for a render; this module starts those processes, follows their
messages and reads what they wrote: a SpoolReader over `<data dir>/replay-cache/
<recording id>/<random>.webm.sealed`, encrypted under a key made here, passed to the
render process through a pipe and never written anywhere.

Slots. A render starts (and renders its first seconds, the head, at normal priority on
one core) when one of `workers` start slots is free (one: heads share that core anyway,
one after the other they leave it to the calls half the time), the others "queued"; at its head it
gives that slot back and goes on at low priority once one of `bulk_workers` slots is free
(enough for a three-party consultation's files side by side, so none of them stops after
its head while the others go on). So the first seconds of every file a trainer opens are
prepared one burst after the other, whatever is being rendered already. `prewarm()`
(called when a trainer lists or opens recordings) starts up to `bulk_workers` spare
processes, one after the other, that load what a render needs and wait; a render takes
one if there is one ready (spares nobody took are stopped after SPARE_IDLE_S).

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
WORKERS = 1                     # renders starting (their head at normal priority, on one core) at once
BULK_WORKERS = 3                # renders past their head (low priority) at once
TTL_S = 3600.0
IDLE_S = 120.0
FAILED_TTL_S = 30.0
MAX_BYTES = 8 << 30
ENV_PREFIX = "CONSULT_"
STOP_GRACE_S = 2.0
SPARE_IDLE_S = 300.0            # a spare render process nobody took is stopped after this


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
                 now: float, members: tuple[str, ...] = ()) -> None:
        self.recording_id, self.group_key = recording_id, group_key
        self.members = members                   # one person's joins played as one (webm.person_groups)
        self.head: Optional[dict[str, Any]] = None  # the render process at its head: {ms, nice, nice_after}
        self.viewer, self.viewer_name = viewer, viewer_name
        self.path = path
        self.state = "queued"
        self.failure: Optional[JobFailure] = None
        self.watermark: Optional[str] = None
        self.plan: Any = None                    # replay_render.RenderPlan once known
        self.rendered_ms = 0
        self.servable_ms = 0                     # how far what may be served plays
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
            "servable_ms": duration if self.state == "ready" and duration else self.servable_ms,
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
                 bulk_workers: int = BULK_WORKERS, ttl_s: float = TTL_S, idle_s: float = IDLE_S,
                 max_bytes: int = MAX_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.data_dir = data_dir.resolve()
        self.root = cache_root(self.data_dir)
        # Render processes find the keys where the server does (environment or data directory).
        self._environ = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX)}
        self.ttl_s, self.idle_s, self.max_bytes = ttl_s, idle_s, max_bytes
        self._clock = clock
        self._slots = threading.BoundedSemaphore(workers)          # starting: the head, at normal priority
        self._bulk = threading.BoundedSemaphore(bulk_workers)      # after the head, at low priority
        self._spares: list[tuple[float, subprocess.Popen]] = []    # (ready at, process) waiting for a request
        self._spare_count = bulk_workers
        self._warming = False
        self._closed = False
        self._jobs: dict[tuple[str, str, str], ReplayJob] = {}
        self._lock = threading.Lock()
        self.started = 0  # renders begun (tests, monitoring)
        shutil.rmtree(self.root, ignore_errors=True)  # the previous process's files: undecryptable now
        make_private_dir(self.root)

    # -- jobs --------------------------------------------------------------------------------------

    def job(self, recording_id: str, group_key: str, viewer: str, viewer_name: str,
            members: tuple[str, ...] = ()) -> ReplayJob:
        """The viewer's replay of that participant (with `members`: of that person, their joins'
        groups played as one): the existing one, or a new render started now. Raises
        RecordingNotFoundError once the recording is purged."""
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
                                self.root / recording_id / f"{secrets.token_hex(8)}.webm.sealed", now, members)
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
        self._retire_spares()

    def close(self) -> None:
        for job in self.jobs():
            self._drop(job)
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for _, process in spares:
            _end(process)

    # -- spare render processes: started ahead, so a render does not wait for its imports -----------

    def prewarm(self, count: Optional[int] = None) -> bool:
        """Starts spare render processes, one after the other in a thread of their own, until `count`
        (default: `bulk_workers`) wait; False if that is under way already. Each loads what a render
        needs (about 0.45 s of CPU, on the heads' core) while nobody waits for it."""
        wanted = self._spare_count if count is None else count
        with self._lock:
            if self._warming or self._closed:
                return False
            self._warming = True
        threading.Thread(target=self._warm, args=(wanted,), name="replay-spares", daemon=True).start()
        return True

    def _warm(self, wanted: int) -> None:
        try:
            while True:
                with self._lock:
                    self._spares = [(t, p) for t, p in self._spares if p.poll() is None]
                    if len(self._spares) >= wanted or self._closed:
                        return
                process = self._spawn()
                assert process.stdout is not None  # a PIPE
                ready = process.stdout.readline()  # ["ready"] once it has loaded everything
                with self._lock:
                    if ready and not self._closed:
                        self._spares.append((self._clock(), process))
                        continue
                _end(process)
                return
        except OSError as exc:
            log.warning("could not start a spare render process: %s", exc)
        finally:
            with self._lock:
                self._warming = False

    def spares(self) -> int:
        with self._lock:
            return sum(1 for _, p in self._spares if p.poll() is None)

    def _take_spare(self) -> Optional[subprocess.Popen]:
        with self._lock:
            while self._spares:
                _, process = self._spares.pop(0)
                if process.poll() is None:
                    return process
        return None

    def _retire_spares(self) -> None:
        now = self._clock()
        with self._lock:
            old = [p for t, p in self._spares if now - t > SPARE_IDLE_S or p.poll() is not None]
            self._spares = [(t, p) for t, p in self._spares if not (now - t > SPARE_IDLE_S or p.poll() is not None)]
        for process in old:
            _end(process)

    @staticmethod
    def _spawn() -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        return subprocess.Popen(_worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                cwd=REPO_ROOT, close_fds=True)

    # -- one render: a process, followed from a thread -----------------------------------------

    def _run(self, job: ReplayJob) -> None:
        slots = _Slots(self._slots, self._bulk)
        slots.start()
        try:
            if job.stop.is_set():  # dropped while it waited for a slot
                job.state = "stopped"
                return
            job.state = "rendering"
            try:
                self._follow(job, slots)
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
        finally:
            slots.release()

    def _follow(self, job: ReplayJob, slots: "_Slots") -> None:
        from .replay_render import RenderPlan
        from .replay_worker import RenderRequest

        make_private_dir(job.path.parent)
        replay_spool.create(job.path)
        key, file_id = replay_spool.new_secret()
        spool = SpoolReader(job.path, key, file_id)
        with job._lock:
            job.spool = spool
        request = RenderRequest(str(self.data_dir), job.recording_id, job.group_key, job.viewer, job.viewer_name,
                                str(job.path), key, file_id, self._environ, job.members)
        with job._lock:
            if job.stop.is_set():
                job.state = "stopped"
                return
            # The key goes through the pipe: never on a command line or in an environment.
            process = self._take_spare() or self._spawn()
            job._process = process
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None and stdout is not None  # both are PIPEs
        try:
            stdin.write(request.to_json())
            stdin.flush()
        except OSError:
            pass  # it died at once: its exit code says so below
        with stdout, stdin:
            for line in stdout:
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if message[0] == "head":
                    self._after_head(job, slots, message[1], stdin)
                elif self._handle(job, spool, message, RenderPlan):
                    return
        # The process ended without a verdict: stopped by us, or it died.
        process.wait()
        if job.stop.is_set():
            job.state = "stopped"
            job.discard()
        else:
            self._fail(job, "crashed", f"the render process ended unexpectedly (exit code {process.returncode})")

    def _after_head(self, job: ReplayJob, slots: "_Slots", head: Any, stdin: Any) -> None:
        """The render's first seconds are ready and it runs at low priority now: its start slot goes
        to the next render; it goes on once it has a slot for the rest (or stops, if dropped)."""
        job.head = head if isinstance(head, dict) else {}
        slots.to_bulk(job.stop)
        if job.stop.is_set():
            return  # discard() terminates the process
        try:
            stdin.write(b"go\n")
            stdin.flush()
        except OSError:
            pass  # it died: its exit code says so

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
            _, ends, points, init_bytes, rendered_ms, servable_ms = message
            spool.add(ends)
            with job._lock:
                job.points.extend((int(t), int(o)) for t, o in points)
                job.init_bytes = init_bytes
                job.servable_ms = max(job.servable_ms, int(servable_ms))
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


class _Slots:
    """One render's place: a start slot until its head, then a bulk slot; whatever it holds is
    given back by release()."""

    def __init__(self, start: threading.BoundedSemaphore, bulk: threading.BoundedSemaphore) -> None:
        self._start, self._bulk = start, bulk
        self._held: Optional[threading.BoundedSemaphore] = None

    def start(self) -> None:
        self._start.acquire()
        self._held = self._start

    def to_bulk(self, stop: threading.Event) -> None:
        """Gives the start slot back and waits for a bulk slot (or until `stop` is set)."""
        self.release()
        while not stop.is_set():
            if self._bulk.acquire(timeout=0.25):
                self._held = self._bulk
                return

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()


def _end(process: subprocess.Popen) -> None:
    """Stops a render process that has no job (a spare)."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass
