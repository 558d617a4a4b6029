"""Capacity: three-party 720p rooms added until the server stops keeping up, for `--workers N`.

    python -m loadtest.bench_capacity --workers 1 2 --rooms 1 2 3 4 6 8 --duration 15 --json out.json

For each room count in rising order, and each worker count (interleaved, the order
alternating from one room count to the next so both see the same machine):

1. `run.py` starts on loopback (N > 1: `--workers N` with a redis-server of the bench's own);
2. the load test's clean profile runs against it (`python -m loadtest`'s run: one client
   process of browser-like participants publishing a pre-encoded 720p clip as simulcast,
   with its audio), `--rooms` three-party rooms;
3. from the measurement window: frames delivered and transport p95 (the load test's
   definitions), the server's CPU (its whole process tree), the load generator's CPU and
   the machine's, and from each worker's own /metrics its event-loop lag over the window;
   from the workers' heartbeats in Redis, the rooms and participants each one holds.

A worker count stops rising at the first room count where delivery falls under
`--delivery-floor` (99 %) or transport p95 passes `--p95-ceiling-ms` (50 ms). When the load
generator or the whole machine was saturated at that point (generator >= 90 % of a core, or
every core >= 95 % busy), the limit is this machine's, not the server's, and the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from loadtest.harness import (
    admin_key_of,
    free_port,
    machine_info,
    node_heartbeats,
    proc_cpu_seconds,
    source_revision,
    start_server_with_workers,
    stop_process,
    tail,
    wait_healthy,
)
from loadtest.server_metrics import HistogramSnapshot, histogram

LOOP_LAG = "consult_event_loop_lag_seconds"
VIDEO_STREAMS_PER_ROOM = 6  # three publishers, each to two subscribers
GENERATOR_SATURATED = 0.90  # of one core: the client process is one Python event loop
MACHINE_SATURATED = 0.95  # of all cores


@dataclass(frozen=True)
class Limits:
    delivery_floor: float = 0.99
    p95_ceiling_ms: float = 50.0

    def broken_by(self, step: dict[str, Any]) -> list[str]:
        """Which limits a step's figures break (empty: the server kept up)."""
        if "error" in step:
            return [f"the run failed: {step['error']}"]
        broken = []
        delivered = step.get("frames_delivered_ratio")
        if delivered is None or delivered < self.delivery_floor:
            broken.append(f"delivery {_pct(delivered)} < {_pct(self.delivery_floor)}")
        p95 = step.get("transport_p95_ms")
        if p95 is None or p95 > self.p95_ceiling_ms:
            broken.append(f"transport p95 {p95} ms > {self.p95_ceiling_ms:g} ms")
        return broken


def saturation(step: dict[str, Any]) -> Optional[str]:
    """What besides the server ran out, if anything: then the step says nothing of the server's limit."""
    generator = step.get("client_cpu_core_share") or 0.0
    machine = step.get("machine_busy") or 0.0
    if generator >= GENERATOR_SATURATED:
        return f"the load generator used {_pct(generator)} of a core"
    if machine >= MACHINE_SATURATED:
        return f"the machine was {_pct(machine)} busy on all {os.cpu_count()} cores"
    return None


@dataclass
class WorkerProbe:
    """Each worker's event-loop lag and CPU over the measurement window (its own /metrics, its
    process), and the rooms each holds (its heartbeat in Redis) as the window closes. Passed to
    the load test's run as a window marker."""

    ports: dict[int, int]  # worker index -> the port it alone serves
    admin_key: Optional[str]
    redis_url: Optional[str] = None
    server_pid: Optional[int] = None  # the single process (no heartbeats without Redis)
    _start: dict[int, HistogramSnapshot] = field(default_factory=dict)
    _cpu_start: dict[int, tuple[int, float, float]] = field(default_factory=dict)  # index -> pid, t, cpu s
    workers: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, name: str) -> None:
        if name == "window_start":
            self._start = {index: snap for index, snap in self._scrape().items() if snap is not None}
            self._cpu_start = {index: (pid, time.monotonic(), proc_cpu_seconds(pid))
                               for index, pid in self._pids().items()}
        elif name == "window_end":
            self.workers = self._window_figures()

    def _heartbeats(self) -> dict[int, dict[str, Any]]:
        if self.redis_url is None:
            return {}
        by_port = {port: index for index, port in self.ports.items()}
        beats = {}
        for beat in node_heartbeats(self.redis_url):
            port = _port_of(beat.get("url", ""))
            index = None if port is None else by_port.get(port)
            if index is not None:
                beats[index] = beat
        return beats

    def _pids(self) -> dict[int, int]:
        if self.server_pid is not None and len(self.ports) == 1:
            return {0: self.server_pid}
        return {index: int(beat["pid"]) for index, beat in self._heartbeats().items() if beat.get("pid")}

    def _cpu_share(self, index: int) -> Optional[float]:
        if index not in self._cpu_start:
            return None
        pid, t0, cpu0 = self._cpu_start[index]
        try:
            return round((proc_cpu_seconds(pid) - cpu0) / max(1e-6, time.monotonic() - t0), 4)
        except OSError:
            return None

    def _scrape(self) -> dict[int, Optional[HistogramSnapshot]]:
        scraped: dict[int, Optional[HistogramSnapshot]] = {}
        for index, port in self.ports.items():
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
            if self.admin_key:
                request.add_header("Authorization", f"Bearer {self.admin_key}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    scraped[index] = histogram(response.read().decode(), LOOP_LAG)
            except OSError:
                scraped[index] = None
        return scraped

    def _window_figures(self) -> list[dict[str, Any]]:
        held = {index: {"rooms": beat["rooms"], "participants": beat["participants"]}
                for index, beat in self._heartbeats().items()}
        cpu = {index: self._cpu_share(index) for index in self.ports}
        figures = []
        for index, end in self._scrape().items():
            start = self._start.get(index)
            lag = end.since(start) if end is not None and start is not None else None
            figures.append({"worker": index, **held.get(index, {}), "cpu_share": cpu[index],
                            "loop_lag_mean_ms": lag.mean_ms() if lag else None,
                            # an upper bound: the histogram's bucket the quantile falls in
                            "loop_lag_p99_ms_at_most": lag.quantile_ms(0.99) if lag else None,
                            "loop_lag_samples": int(lag.count) if lag else 0})
        return figures


def _port_of(url: str) -> Optional[int]:
    try:
        return int(url.rsplit(":", 1)[1].split("/")[0])
    except (IndexError, ValueError):
        return None


def worker_ports(port: int, workers: int) -> dict[int, int]:
    """Where each worker alone answers: the single process on the public port; worker n of
    several on the public port + 1 + n (signalling.workers)."""
    return {0: port} if workers == 1 else {index: port + 1 + index for index in range(workers)}


def load_test_args(rooms: int, base_url: str, admin_key: str, server_pid: int, args: argparse.Namespace
                   ) -> argparse.Namespace:
    from loadtest.__main__ import parse_args as load_test_parse_args

    # (an admin key may begin with "-": given as one argument so it is not read as an option)
    argv = ["--url", base_url, f"--admin-key={admin_key}", "--server-pid", str(server_pid),
            "--rooms", str(rooms), "--profile", "clean", "--resolution", args.resolution,
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--clip-seconds", str(args.clip_seconds), "--no-progress"]
    if args.cache_dir is not None:
        argv += ["--cache-dir", str(args.cache_dir)]
    return load_test_parse_args(argv)


def run_step(workers: int, rooms: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server with `workers` workers, `rooms` rooms of load: the window's figures."""
    from loadtest.__main__ import Progress, run_once
    from loadtest.impairment import PROFILES

    step: dict[str, Any] = {"workers": workers, "rooms": rooms, "video_streams": rooms * VIDEO_STREAMS_PER_ROOM,
                            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix=f"capacity-w{workers}-r{rooms}-") as tmp:
        workdir = Path(tmp)
        server = redis = None
        try:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            server, redis = start_server_with_workers("ours", port, workdir, workers)
            wait_healthy(server, base_url)
            admin_key = admin_key_of("ours", workdir)
            assert admin_key is not None  # ours always has one
            probe = WorkerProbe(worker_ports(port, workers), admin_key, redis.url if redis else None,
                                server_pid=server.pid)
            result, _ = run_once(load_test_args(rooms, base_url, admin_key, server.pid, args), "ours",
                                 PROFILES["clean"], Progress(0, False), window_markers=(probe,))
            if "error" in result:
                step["error"] = result["error"]
                step["server_log_tail"] = result.get("server_log_tail") or tail(workdir / "server.log")
                step["client_log_tail"] = result.get("client_log_tail")
            else:
                if workers == 1:  # one process holds every room; it has no heartbeat without Redis
                    probe.workers[0].update(rooms=rooms, participants=3 * rooms)
                step.update(step_figures(result, probe.workers))
        except Exception as exc:
            step["error"] = f"{type(exc).__name__}: {exc}"
            step["server_log_tail"] = tail(workdir / "server.log")
        finally:
            stop_process(server, signal.SIGINT, 15)
            if redis is not None:
                redis.stop()
    return step


def step_figures(result: dict[str, Any], workers: list[dict[str, Any]]) -> dict[str, Any]:
    server_cpu = result.get("server_cpu_core_share")
    streams = len(result.get("video_streams_detail") or ()) or None
    return {
        "frames_delivered_ratio": result.get("frames_delivered_ratio"),
        "transport_p95_ms": (result.get("transport_ms") or {}).get("p95"),
        "frozen_ratio": result.get("frozen_ratio"),
        "audio_in_time_ratio": result.get("audio_in_time_ratio"),
        "server_cpu_core_share": server_cpu,
        "server_cpu_per_video_stream": (round(server_cpu / streams, 5)
                                        if server_cpu is not None and streams else None),
        "client_cpu_core_share": result.get("client_cpu_core_share"),
        "client_loop_lag_ms": result.get("client_loop_lag_ms"),
        "machine_busy": (result.get("machine_usage") or {}).get("busy_share_of_all_cores"),
        "server_rss_mb": result.get("server_rss_mb"),
        "workers_detail": workers,
    }


def ramp(args: argparse.Namespace, report: dict[str, Any]) -> None:
    limits = Limits(args.delivery_floor, args.p95_ceiling_ms)
    rising = list(args.workers)
    turn = 0
    for rooms in sorted(args.rooms):
        for repeat in range(args.repeat):
            order = rising if turn % 2 == 0 else list(reversed(rising))
            turn += 1
            for workers in order:
                print(f"[{time.strftime('%H:%M:%S')}] --workers {workers}, {rooms} room(s), "
                      f"run {repeat + 1}/{args.repeat} ...", flush=True)
                ramp_step(workers, rooms, args, limits, report)
        rising = [w for w in rising if not any(s["workers"] == w and s["limits_broken"] for s in report["steps"])]
        if not rising:
            break


def ramp_step(workers: int, rooms: int, args: argparse.Namespace, limits: Limits, report: dict[str, Any]) -> None:
    step = run_step(workers, rooms, args)
    step["limits_broken"] = limits.broken_by(step)
    step["saturated"] = saturation(step) if step["limits_broken"] else None
    report["steps"].append(step)
    print("  " + describe(step), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def describe(step: dict[str, Any]) -> str:
    if "error" in step:
        return f"FAILED: {step['error']}"
    lags = ", ".join(f"worker {w['worker']}: {w.get('rooms', '?')} rooms, CPU {_pct(w['cpu_share'])}, "
                     f"lag mean {w['loop_lag_mean_ms']} ms p99 <= {w['loop_lag_p99_ms_at_most']} ms"
                     for w in step["workers_detail"])
    verdict = "; ".join(step["limits_broken"]) or "kept up"
    if step.get("saturated"):
        verdict += f" ({step['saturated']}: the machine's limit, not the server's)"
    return (f"delivered {_pct(step['frames_delivered_ratio'])}, transport p95 {step['transport_p95_ms']} ms, "
            f"server CPU {_pct(step['server_cpu_core_share'])} of a core "
            f"({_pct(step['server_cpu_per_video_stream'], 2)} per video stream), "
            f"generator {_pct(step['client_cpu_core_share'])}, machine {_pct(step['machine_busy'])} busy; "
            f"{lags}; {verdict}")


def summary(steps: list[dict[str, Any]], workers: list[int], limits: Limits) -> dict[str, Any]:
    """Per worker count: the largest room count kept up with, and why the next did not; the
    per-stream CPU of each worker count against the first at the room counts both kept up with;
    the capacity per core projected from the first worker count's per-stream cost."""
    out: dict[str, Any] = {"by_workers": {}}
    for w in workers:
        mine = sorted((s for s in steps if s["workers"] == w), key=lambda s: s["rooms"])
        kept = [s for s in mine if not s["limits_broken"]]
        first_broken = next((s for s in mine if s["limits_broken"]), None)
        out["by_workers"][str(w)] = {
            # every run at this room count and below kept up
            "kept_up_to_rooms": max((s["rooms"] for s in kept
                                     if first_broken is None or s["rooms"] < first_broken["rooms"]), default=0),
            "stopped_at": None if first_broken is None else {
                "rooms": first_broken["rooms"], "why": first_broken["limits_broken"],
                "saturated": first_broken["saturated"]},
            "cpu_per_video_stream_median": _median([s["server_cpu_per_video_stream"] for s in kept]),
        }
    base = workers[0]

    def cost_at(w: int, rooms: int) -> Optional[float]:
        return _median([s["server_cpu_per_video_stream"] for s in steps
                        if s["workers"] == w and s["rooms"] == rooms and not s["limits_broken"]])

    for w in workers[1:]:
        ratios: dict[int, float] = {}
        for rooms in sorted({step["rooms"] for step in steps}):
            with_w, with_base = cost_at(w, rooms), cost_at(base, rooms)
            if with_w and with_base:
                ratios[rooms] = round(with_w / with_base, 3)
        out["by_workers"][str(w)][f"cpu_per_stream_vs_workers_{base}"] = (
            round(statistics.median(ratios.values()), 3) if ratios else None)
        out["by_workers"][str(w)][f"cpu_per_stream_vs_workers_{base}_by_rooms"] = ratios
    cost = out["by_workers"][str(base)]["cpu_per_video_stream_median"]
    out["projected_video_streams_per_core"] = round(1 / cost) if cost else None
    out["projected_rooms_per_core"] = round(1 / cost / VIDEO_STREAMS_PER_ROOM) if cost else None
    out["limits"] = {"delivery_floor": limits.delivery_floor, "p95_ceiling_ms": limits.p95_ceiling_ms}
    return out


def markdown_table(steps: list[dict[str, Any]]) -> str:
    lines = ["| workers | rooms | video streams | delivered | transport p95 | server CPU | per video stream | "
             "load generator CPU | machine busy | rooms per worker | CPU per worker | "
             "loop lag per worker (mean / p99 at most) | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(steps, key=lambda s: (s["rooms"], s["workers"])):
        if "error" in s:
            lines.append(f"| {s['workers']} | {s['rooms']} | {s['video_streams']} | failed: {s['error']} "
                         "| | | | | | | | | |")
            continue
        detail = s["workers_detail"]
        lags = " / ".join(f"{_ms(w['loop_lag_mean_ms'])}, {_ms(w['loop_lag_p99_ms_at_most'])}" for w in detail)
        verdict = "; ".join(s["limits_broken"]) or "kept up"
        if s.get("saturated"):
            verdict += f" ({s['saturated']})"
        lines.append(
            f"| {s['workers']} | {s['rooms']} | {s['video_streams']} | {_pct(s['frames_delivered_ratio'])} | "
            f"{s['transport_p95_ms']} ms | {_pct(s['server_cpu_core_share'])} | "
            f"{_pct(s['server_cpu_per_video_stream'], 2)} | {_pct(s['client_cpu_core_share'])} | "
            f"{_pct(s['machine_busy'])} | {' / '.join(str(w.get('rooms', '-')) for w in detail)} | "
            f"{' / '.join(_pct(w['cpu_share']) for w in detail)} | "
            f"{lags} | "
            f"{verdict} |")
    return "\n".join(lines)


def _median(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 5) if present else None


def _pct(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:g} ms"


def parse_args(argv: list[str]) -> argparse.Namespace:
    from loadtest.clips import RESOLUTIONS
    from loadtest.preencoded import default_cache_dir

    p = argparse.ArgumentParser(prog="python -m loadtest.bench_capacity", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                   help="worker counts to measure (1: one process, no Redis); the first is the reference")
    p.add_argument("--rooms", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8],
                   help="three-party room counts, tried in rising order until a limit breaks")
    p.add_argument("--duration", type=float, default=15.0, help="measurement window per step, seconds")
    p.add_argument("--repeat", type=int, default=1, help="runs per (room count, worker count), interleaved")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds between 'media flows' and the window")
    p.add_argument("--resolution", choices=list(RESOLUTIONS), default="720p")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="length of the looped clip")
    p.add_argument("--delivery-floor", type=float, default=Limits.delivery_floor,
                   help="a step keeps up while at least this share of frames is delivered")
    p.add_argument("--p95-ceiling-ms", type=float, default=Limits.p95_ceiling_ms,
                   help="... and transport p95 stays at or under this")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where encoded clips are kept")
    p.add_argument("--json", type=Path, help="write every step and the summary here")
    args = p.parse_args(argv)
    if any(w < 1 for w in args.workers) or any(r < 1 for r in args.rooms) or args.duration <= 0 or args.repeat < 1:
        p.error("need --workers >= 1, --rooms >= 1, --repeat >= 1 and --duration > 0")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    report: dict[str, Any] = {"command": "python -m loadtest.bench_capacity " + " ".join(map(shlex.quote, argv)),
                              "machine": machine_info(), "source": source_revision(), "steps": []}
    ramp(args, report)
    report["summary"] = summary(report["steps"], list(args.workers), Limits(args.delivery_floor,
                                                                              args.p95_ceiling_ms))
    report["table_markdown"] = markdown_table(report["steps"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print(report["table_markdown"])
    print()
    print(json.dumps(report["summary"], indent=2))
    return 1 if any("error" in s for s in report["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
