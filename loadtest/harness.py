"""Process machinery shared by the benchmarks and the load-test tool.

Starting a server (ours: run.py; or the aiortc MediaRelay baseline) as its own
process on 127.0.0.1, making rooms and join tokens, reading JSON-line events
from a client process with timeouts, sampling a process's CPU and memory from
/proc, and describing the machine and the source revision measured.

Moved here from loadtest/bench_forwarding.py so `python -m loadtest` and the
forwarding benchmark start and measure servers the same way.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ours", "relay")
ROLES = ("patient", "doctor", "expert")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- /proc sampling ------------------------------------------------------------------------


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat); utime, stime are fields 14, 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and every process under it (a server's workers), in seconds."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent and child not in tree]
        tree.update(children)
        frontier += children
    total = 0.0
    for member in tree:
        try:
            total += proc_cpu_seconds(member)
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile
    return total


def proc_memory_mb(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(out.get("VmRSS", 0.0), 1), "peak_rss_mb": round(out.get("VmHWM", 0.0), 1)}


def machine_cpu_ticks() -> dict[str, int]:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    ticks = dict(zip(names, values))
    ticks["total"] = sum(values[:8])
    return ticks


def machine_usage(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    total = max(1, after["total"] - before["total"])
    idle = (after["idle"] - before["idle"]) + (after["iowait"] - before["iowait"])
    steal = after["steal"] - before["steal"]
    return {"busy_share_of_all_cores": round(1 - idle / total, 3), "steal_share": round(steal / total, 3)}


class ProcessSampler:
    """CPU share (of one core) and RSS of one process, sampled by a thread about once a second.
    With `tree`, the CPU of every process under it too (a server's workers)."""

    def __init__(self, pid: int, interval: float = 1.0, *, tree: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self._cpu_seconds = tree_cpu_seconds if tree else proc_cpu_seconds
        self.samples: list[dict[str, float]] = []  # {"t", "cpu_share", "rss_mb"}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._marks: dict[str, tuple[float, float]] = {}

    def start(self) -> "ProcessSampler":
        self._thread.start()
        return self

    def mark(self, name: str) -> None:
        """Remember (time, cpu seconds) now, e.g. the measurement window's start and end."""
        try:
            self._marks[name] = (time.monotonic(), self._cpu_seconds(self.pid))
        except OSError:
            pass

    def share_between(self, start: str, end: str) -> Optional[float]:
        if start not in self._marks or end not in self._marks:
            return None
        (t0, c0), (t1, c1) = self._marks[start], self._marks[end]
        return (c1 - c0) / max(1e-6, t1 - t0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            last_t, last_cpu = time.monotonic(), self._cpu_seconds(self.pid)
            while not self._stop.wait(self.interval):
                now, cpu = time.monotonic(), self._cpu_seconds(self.pid)
                memory = proc_memory_mb(self.pid)
                self.samples.append({"t": now, "cpu_share": round((cpu - last_cpu) / max(1e-6, now - last_t), 4),
                                     "rss_mb": memory["rss_mb"]})
                last_t, last_cpu = now, cpu
        except OSError:
            pass  # the process ended


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, Optional[str]] = {}
    for name in ("aiortc", "av", "aiohttp", "aioice", "pylibsrtp", "numpy"):
        try:
            from importlib.metadata import version
            versions[name] = version(name)
        except Exception:
            versions[name] = None
    return {"nproc": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "kernel": platform.release(), "versions": versions, "source": source_revision()}


def source_revision() -> dict[str, Any]:
    """The commit measured, and whether the server's code had uncommitted changes."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "media", "signalling", "run.py", "loadtest")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": None if dirty is None else dirty.splitlines()}


# --- talking to processes -------------------------------------------------------------------


def emit(event: dict) -> None:
    """A client process's report to its orchestrator: one JSON object per stdout line."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: Optional[dict] = None, key: Optional[str] = None,
              timeout: float = 5) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSULT_")}
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LineReader:
    """JSON lines from a child's stdout, read by a thread, taken with a timeout."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for line in stream:
            line = line.strip()
            if line:
                try:
                    self._queue.put(json.loads(line))
                except ValueError:
                    pass
        self._queue.put(None)

    def next(self, timeout: float) -> Optional[dict]:
        """The next event within timeout (None on timeout); raises when the child exited or failed."""
        try:
            message = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if message is None:
            raise RuntimeError("the client exited")
        if message.get("event") == "error":
            raise RuntimeError(f"the client failed: {message.get('message')}")
        return message

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the client sent no '{event}' within {timeout:g} s")
            try:
                message = self.next(remaining)
            except RuntimeError as exc:
                if "exited" in str(exc):
                    raise RuntimeError(f"the client exited before '{event}'") from None
                raise
            if message is not None and message.get("event") == event:
                return message


def stop_process(proc: Optional[subprocess.Popen], sig=signal.SIGINT, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- servers, rooms, tokens -----------------------------------------------------------------


def start_server(kind: str, port: int, workdir: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    log = open(workdir / "server.log", "wb")
    if kind == "ours":
        cmd = [sys.executable, str(REPO_ROOT / "run.py"), "--host", "127.0.0.1", "--port", str(port),
               "--media-host-address", "127.0.0.1", "--data-dir", str(workdir / "data"), "--no-demo-room",
               "--log-level", "WARNING", *extra]
    elif kind == "relay":
        cmd = [sys.executable, "-m", "loadtest.relay_baseline", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "WARNING"]
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    try:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=child_env(), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def start_server_with_workers(kind: str, port: int, workdir: Path, workers: int
                              ) -> tuple[subprocess.Popen, Optional[Any]]:
    """`start_server`, and with `workers` > 1 our server as `--workers N` on a redis-server of its
    own (loopback, no disk: tests.redis_server). Returns the server and that Redis (to stop), if any."""
    if workers <= 1:
        return start_server(kind, port, workdir), None
    from tests.redis_server import RedisServer

    redis = RedisServer(workdir / "redis")
    redis.start()
    try:
        return start_server("ours", port, workdir, ("--workers", str(workers), "--redis-url", redis.url)), redis
    except BaseException:
        redis.stop()
        raise


def wait_healthy(proc: Optional[subprocess.Popen], base_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if http_json("GET", base_url + "/healthz", timeout=1).get("ok"):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer /healthz within {timeout:g} s")


def make_rooms(kind: str, base_url: str, admin_key: Optional[str], rooms: int, *, video_codec: str = "vp8",
               prefix: str = "bench", processors: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    """(room id, join tokens in ROLES order) for `rooms` three-party rooms.

    Ours: rooms and signed links through the admin REST API. The relay baseline
    has no admin API; its tokens are "<room>/<identity>/<name>".
    """
    tag = f"{prefix}-{int(time.time() * 1000) % 10_000_000}"  # fresh ids on a long-running --url server
    if kind == "relay":
        return [(f"{tag}-{r}", [f"{tag}-{r}/{tag}-{r}-{role}/{role}" for role in ROLES]) for r in range(rooms)]
    if not admin_key:
        raise ValueError("making rooms on our server needs its admin key")
    made = []
    for r in range(rooms):
        room = http_json("POST", base_url + "/api/rooms",
                         {"id": f"{tag}-{r}", "name": f"Load test room {r}", "max_participants": 3,
                          # explicit: the server's default turns face analysis on, which is not forwarding
                          "video_codec": video_codec, "processors": list(processors)}, admin_key)
        made.append((room["id"], [
            http_json("POST", f"{base_url}/api/rooms/{room['id']}/links",
                      {"role": role, "name": role.capitalize(), "identity": f"{tag}-{r}-{role}"}, admin_key)["token"]
            for role in ROLES
        ]))
    return made


def admin_key_of(kind: str, workdir: Path) -> Optional[str]:
    """The admin key of a server this process started in `workdir` (none for the relay)."""
    return None if kind == "relay" else (workdir / "data" / "admin.key").read_text().strip()


def close_rooms(base_url: str, admin_key: Optional[str], room_ids: list[str]) -> None:
    """Best effort: close the rooms we made on a server we did not start."""
    for room_id in room_ids:
        try:
            http_json("DELETE", f"{base_url}/api/rooms/{room_id}", key=admin_key)
        except OSError:
            pass


def node_heartbeats(redis_url: str) -> list[dict[str, Any]]:
    """Every live node's (or worker's) heartbeat in the service's Redis: its url, rooms and participants,
    busiest first. How evenly the rooms spread."""
    import asyncio

    from signalling.redis_state import connect

    async def read() -> list[dict[str, Any]]:
        client = connect(redis_url)
        try:
            keys = [key async for key in client.scan_iter(match="consult:node:*")]
            nodes = [json.loads(raw) for raw in await client.mget(keys) if raw] if keys else []
            return sorted(nodes, key=lambda n: -n["participants"])
        finally:
            await client.aclose()

    return asyncio.run(read())
