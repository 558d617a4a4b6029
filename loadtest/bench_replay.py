"""Cost of watermarked replays: how fast a recording is decoded, marked and encoded for a
viewer, how soon the first seconds can play, and what it does to an event loop in the
same process (the server's, which forwards live media).

    python -m loadtest.bench_replay [--size 1280x720] [--seconds 60] [--participants 1 2]
        [--cpu-used 16] [--workers N] [--calls N [--calls-resolution 720p] [--calls-lead 8]] [--json out.json]

A real recording is made first: per participant, a drifting photograph encoded as a
browser would send it (VP8 realtime, 1.5 Mbit/s at 720p scaled by area, one keyframe at
the start) and an Opus tone, in an encrypted recording with its audit log. Then each
participant's replay is prepared through recorder/replay_cache.py exactly as the replay
API does (audited open, watermark issued, render into the encrypted spool), all
participants at once as when a trainer opens a consultation.

Also the picture's PSNR against what was recorded (invisible mark + re-encode; the visible
label is left out of that figure). Reported per run: seconds of recording per second of
wall time (x real time) per file,
CPU of the render processes (% of one core, their own accounting), time until the first
cluster is playable (`first_playable_s`, the slowest file), until the first PLAYABLE_MS of
every file can be fetched (`playable_s`: what the page needs to start and keep playing),
until every file is complete (`complete_s`), and the lag of a 5 ms asyncio timer in this
process (p50/p99/max) before and during the renders: what a render costs the server's event
loop. `--in-process` runs the same renders in threads of this process instead (at the same
nice level), for comparison. `--workers` sets the render slots (default: the server's).
Spare render processes are started 2 s before the renders, as the replay API does when the
trainer's page lists the recordings (`--cold`: not).

`--calls N`: the replays are prepared while N live three-party calls run on this machine,
as `python -m loadtest` runs them (its server, run.py, and one client process of synthetic
participants sending a pre-encoded clip, profile `clean`; loadtest/__main__.py `run_once`).
Its measurement window opens, `--calls-lead` seconds of calls alone pass, then the replays
start. Reported for the calls, from the client's record cut into slices of that window: the
calls alone, the 2 s before the replays (`listing`: the spare render processes starting),
the first PLAYABLE_SLICE_S seconds of the replays (when the first seconds get their share of
the CPU), the rest of the replays and the window after them: frames delivered, transport and
glass-to-glass latency, audio in time; and the server's and the machine's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import fractions
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import av
import numpy as np

from loadtest.synthetic_video import moving_photo
from recorder import replay_render
from recorder.audit import AuditLog
from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.reader import RecordingReader
from recorder.replay_cache import ReplayRenders
from recorder.replay_worker import CPU_USED_ENV
from recorder.watermark_store import load_key
from recorder.webm import media_groups
from recorder.writer import RecordingWriter
from watermark.registry import WatermarkRegistry

FPS = 30
PLAYABLE_MS = 2000       # the first seconds of a file: fetchable once what may be served plays this far ...
PLAYABLE_SLACK_MS = 100  # ... to within a few frames
PLAYABLE_SLICE_S = 5.0   # the calls' figures over this long from the replays' start


def make_recording(data_dir: Path, keys: KeyStore, audit: AuditLog, size: tuple[int, int], seconds: float,
                   participants: int) -> str:
    w, h = size
    tracks = []
    for p in range(participants):
        tracks += [TrackInfo(f"p-{p}-video", "video", "VP8", 90000), TrackInfo(f"p-{p}-audio", "audio", "opus", 48000)]
    writer = RecordingWriter.start(data_dir, keys, room="bench", tracks=tracks, audit=audit, actor="bench", fsync=False)
    items: list[tuple[int, str, int, bool, bytes]] = []
    for p in range(participants):
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base, enc.framerate = fractions.Fraction(1, FPS), fractions.Fraction(FPS)
        enc.bit_rate = int(1_500_000 * w * h / (1280 * 720))
        enc.gop_size = 10 ** 6
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for i, image in enumerate(moving_photo(w, h, int(seconds * FPS), seed=p, fps=FPS)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            for packet in enc.encode(frame):
                assert packet.pts is not None  # the encoder stamps its packets with the frames' pts
                ms = int(packet.pts * 1000 / FPS)
                items.append((ms, f"p-{p}-video", ms * 90, packet.is_keyframe, bytes(packet)))
        aenc = av.CodecContext.create("libopus", "w")
        aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
        tone = np.repeat((np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 3000).astype(np.int16), 2)[None, :]
        for n in range(int(seconds * 50)):
            chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="stereo")
            chunk.sample_rate, chunk.pts = 48000, n * 960
            for packet in aenc.encode(chunk):
                items.append((n * 20, f"p-{p}-audio", n * 960, False, bytes(packet)))
    for ms, track, rtp, key, payload in sorted(items, key=lambda item: item[0]):
        writer.write_frame(track, ms, rtp, key, payload)
    writer.close()
    return writer.id


async def _loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 5 ms timer fires: what the render threads cost the event loop (GIL, CPU)."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((time.perf_counter() - t0 - 0.005) * 1000)


def _lag_summary(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {"p50_ms": round(statistics.median(ordered), 2), "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
            "max_ms": round(ordered[-1], 2)}


def _render_in_threads(data_dir: Path, keys: KeyStore, audit: AuditLog, recording_id: str, key: str) -> dict:
    """The same render in threads of this process (the design the render process replaced), at the
    same priority: this thread is niced, and the pipeline threads it starts inherit that (Linux)."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), replay_render.RENDER_NICE)
    reader = RecordingReader.open(data_dir, recording_id, keys)
    group = next(g for g in media_groups(reader.manifest) if g.key == key)
    registry = WatermarkRegistry(audit, load_key(data_dir, environ={}, create=True))
    issued = registry.issue(viewer="bench-viewer", viewer_name="Dr Bench", purpose="replay",
                            recording_id=recording_id, actor="bench")

    class Sink:
        size = 0

        def write(self, data: bytes) -> int:
            self.size += len(data)
            return len(data)

    sink = Sink()
    the_plan = replay_render.plan(reader, group)
    assert the_plan is not None  # make_recording wrote media for every participant
    stats = replay_render.render(reader, group, the_plan, sink, mark=registry.watermarker(issued).mark_i420)
    return {"frames": stats.frames, "size": sink.size}


def _environ() -> dict[str, str]:
    """The render processes get the encoder speed under test (the keys are in the data directory)."""
    return {CPU_USED_ENV: replay_render.ENCODER_OPTIONS["cpu-used"]}


class _Servable:
    """How far the part of a file that may be fetched now plays: its bytes, as the page would get
    them, through a cluster index (recorder/webm_index.py `complete_ms`)."""

    def __init__(self, job: Any) -> None:
        from recorder.webm_index import ClusterIndex

        self.job, self.index, self.fed = job, ClusterIndex(), 0

    def ms(self) -> int:
        if self.job.state == "ready":
            return 2**62
        ready = self.job.readable()[0]
        if ready > self.fed:
            self.index.feed(self.job.read(self.fed, ready))
            self.fed = ready
        return self.index.complete_ms


async def _measure(data_dir: Path, keys: KeyStore, audit: AuditLog, recording_id: str, participants: int,
                   seconds: float, in_process: bool, workers: Optional[int] = None,
                   cold: bool = False) -> dict[str, Any]:
    renders = (ReplayRenders(data_dir, environ=_environ()) if workers is None
               else ReplayRenders(data_dir, environ=_environ(), workers=workers))
    prewarmed = 0
    listed_at = time.monotonic()
    if not cold and not in_process and hasattr(renders, "prewarm"):
        renders.prewarm()  # as when the trainer's page lists the recordings, 2 s before the click
    stop = asyncio.Event()
    idle: list[float] = []
    lagger = asyncio.ensure_future(_loop_lag(stop, idle))
    await asyncio.sleep(2.0)
    stop.set()
    await lagger
    busy: list[float] = []
    stop = asyncio.Event()
    lagger = asyncio.ensure_future(_loop_lag(stop, busy))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    started_at = time.monotonic()
    first: dict[int, float] = {}
    playable: dict[int, float] = {}
    complete: dict[int, float] = {}
    if in_process:
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(participants) as pool:  # its threads end niced: not reused
            results = await asyncio.gather(*(loop.run_in_executor(pool, _render_in_threads, data_dir, keys, audit,
                                                                  recording_id, f"p-{p}") for p in range(participants)))
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        frames = sum(r["frames"] for r in results)
        sizes = [r["size"] for r in results]
    else:
        prewarmed = renders.spares() if hasattr(renders, "spares") else 0
        jobs = [renders.job(recording_id, f"p-{p}", "bench-viewer", "Dr Bench") for p in range(participants)]
        servable = [_Servable(job) for job in jobs]
        while any(job.state in ("queued", "rendering") for job in jobs):
            await asyncio.sleep(0.02)
            now = time.perf_counter() - wall0
            for n, job in enumerate(jobs):
                if n not in first and job.points and job.readable()[0] > job.points[0][1]:
                    first[n] = now
                if n not in playable and servable[n].ms() >= PLAYABLE_MS - PLAYABLE_SLACK_MS:
                    playable[n] = now
                if n not in complete and job.state == "ready":
                    complete[n] = now
        wall = time.perf_counter() - wall0
        for n in range(participants):  # a file shorter than PLAYABLE_MS is playable once complete
            playable.setdefault(n, complete.get(n, wall))
        failed = [j.status().get("error") for j in jobs if j.state != "ready"]
        if failed:
            raise SystemExit(f"render failed: {failed}")
        cpu, frames = 0.0, 0
        for j in jobs:
            assert j.stats is not None  # every job is ready, and "done" sets the stats first
            cpu += j.stats["cpu_s"]
            frames += j.stats["frames"]
        sizes = [j.readable()[1] or 0 for j in jobs]
    stop.set()
    await lagger
    renders.close()
    return {
        "participants": participants,
        "renders": "threads of this process" if in_process else "render processes",
        "spares_ready": prewarmed,
        "wall_s": round(wall, 2),
        "x_realtime_per_file": round(seconds / wall, 2),
        "cpu_pct_of_one_core": round(100 * cpu / wall, 1),
        "cpu_ms_per_frame": round(1000 * cpu / frames, 2),
        "first_playable_s": round(max(first.values()), 2) if len(first) == participants else None,
        "first_playable_per_file_s": [round(first[n], 2) if n in first else None for n in range(participants)],
        "playable_s": round(max(playable.values()), 2) if playable else None,
        "playable_per_file_s": [round(playable[n], 2) if n in playable else None for n in range(participants)],
        "complete_s": round(wall, 2),
        "listed_monotonic": listed_at,
        "replay_started_monotonic": started_at,
        "replay_ended_monotonic": time.monotonic(),
        "mbit_per_s": round(8 * sum(sizes) / participants / seconds / 1e6, 2),
        "loop_lag_idle": _lag_summary(idle),
        "loop_lag_rendering": _lag_summary(busy),
    }


def picture_psnr(data_dir: Path, keys: KeyStore, recording_id: str, frames: int = 150) -> float:
    """Luma PSNR of a replay against the recorded pictures, with the invisible mark but without the
    visible label (which changes its pixels on purpose): what the mark and the re-encode cost."""
    import io

    from watermark.embed import Watermarker

    reader = RecordingReader.open(data_dir, recording_id, keys)
    group = next(g for g in media_groups(reader.manifest) if g.key == "p-0")
    the_plan = replay_render.plan(reader, group)
    assert the_plan is not None  # make_recording wrote media for every participant
    out = io.BytesIO()

    class Sink:
        def write(self, data: bytes) -> int:
            return out.write(data)

    marker = Watermarker(load_key(data_dir, environ={}, create=True), 0x1234ABCD, "", visible=False)
    replay_render.render(reader, group, the_plan, Sink(), mark=marker.mark_i420)
    decoder = av.CodecContext.create("vp8", "r")
    source = []
    for frame in reader.frames("p-0-video"):
        for picture in decoder.decode(av.Packet(frame.payload)):
            source.append(picture.to_ndarray(format="gray").astype(np.float32))
        if len(source) >= frames:
            break
    with av.open(io.BytesIO(out.getvalue()), "r") as container:
        marked = [f.to_ndarray(format="gray").astype(np.float32)
                  for _, f in zip(range(frames), container.decode(video=0))]
    mse = np.mean([np.mean((a - b) ** 2) for a, b in zip(source, marked)])
    return round(float(10 * np.log10(255 ** 2 / mse)), 2)


class _WindowOpened:
    """A loadtest WindowMarker: tells the replays when the calls' measurement window is open."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.closed = threading.Event()

    def mark(self, name: str) -> None:
        (self.opened if name == "window_start" else self.closed).set()


def _call_figures(record: dict, start: float, end: float) -> Optional[dict[str, Any]]:
    """The calls' figures over [start, end) of their clock (time.monotonic, the same in every process)."""
    from loadtest.metrics import run_metrics

    if end - start < 0.5:
        return None
    summary = run_metrics({**record, "window": {"start": start, "end": end}})["summary"]
    return {"seconds": round(end - start, 2),
            "frames_delivered_ratio": summary["frames_delivered_ratio"],
            "transport_ms": summary["transport_ms"], "glass_to_glass_ms": summary["latency_ms"],
            "freeze_count": summary["freeze_count"], "audio_in_time_ratio": summary["audio_in_time_ratio"]}


def _with_calls(calls: int, resolution: str, lead_s: float, window_s: float,
                replays: "Any") -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs `replays()` (-> its figures) `lead_s` into the window of `calls` live three-party calls."""
    from loadtest.__main__ import Progress, parse_args, run_once
    from loadtest.impairment import PROFILES

    with tempfile.TemporaryDirectory(prefix="bench-replay-calls-") as tmp:
        args = parse_args(["--rooms", str(calls), "--duration", str(window_s), "--resolution", resolution,
                           "--profile", "clean", "--server", "ours", "--no-progress", "--keep-records", tmp])
        marker = _WindowOpened()
        out: dict[str, Any] = {}

        def calls_thread() -> None:
            try:
                out["result"], _ = run_once(args, "ours", PROFILES["clean"], Progress(0, False), [marker])
            finally:
                marker.opened.set()
                marker.closed.set()

        thread = threading.Thread(target=calls_thread, name="bench-calls", daemon=True)
        thread.start()
        if not marker.opened.wait(300) or "result" in out:
            thread.join(60)
            raise SystemExit(f"the calls did not start: {out.get('result', {}).get('error', 'timeout')}")
        time.sleep(lead_s)
        figures = replays()
        thread.join(window_s + 180)
        result = out.get("result") or {}
        if "error" in result:
            raise SystemExit(f"the calls failed: {result['error']}")
        record = json.loads((Path(tmp) / "ours-clean.json").read_text())
    window_start, window_end = record["window"]["start"], record["window"]["end"]
    listed, replay_start = figures["listed_monotonic"], figures["replay_started_monotonic"]
    replay_end = figures["replay_ended_monotonic"]
    head_end = min(window_end, replay_start + PLAYABLE_SLICE_S)
    calls_out = {
        "rooms": calls, "participants": 3 * calls, "resolution": resolution, "window_s": window_s,
        "server_cpu_core_share": result.get("server_cpu_core_share"),
        "client_cpu_core_share": result.get("client_cpu_core_share"),
        "machine_usage": result.get("machine_usage"),
        "alone": _call_figures(record, window_start, listed),
        "listing": _call_figures(record, listed, replay_start),  # spare render processes starting
        "replay_first_seconds": _call_figures(record, replay_start, head_end),
        "replay_rest": _call_figures(record, head_end, min(window_end, replay_end)),
        "after_replay": _call_figures(record, replay_end, window_end),
        "whole_window": {k: result.get(k) for k in ("frames_delivered_ratio", "transport_ms", "latency_ms",
                                                    "freeze_count", "audio_in_time_ratio")},
    }
    return figures, calls_out


def run(size: tuple[int, int], seconds: float, participant_counts: list[int], cpu_used: Optional[str],
        in_process: bool = False, workers: Optional[int] = None, calls: int = 0, calls_resolution: str = "720p",
        calls_lead_s: float = 8.0, calls_window_s: Optional[float] = None, repeat: int = 1,
        cold: bool = False) -> dict:
    if cpu_used is not None:
        replay_render.ENCODER_OPTIONS["cpu-used"] = cpu_used
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        keys = KeyStore.open(data_dir, environ={}, create=True)
        audit = AuditLog.open(data_dir, environ={}, create=True)
        recording_id = make_recording(data_dir, keys, audit, size, seconds, max(participant_counts))
        for _ in range(repeat):
            for participants in participant_counts:
                def replays(participants: int = participants) -> dict[str, Any]:
                    return asyncio.run(_measure(data_dir, keys, audit, recording_id, participants, seconds,
                                                in_process, workers, cold))
                if calls:
                    window = calls_window_s or calls_lead_s + 30.0
                    figures, calls_out = _with_calls(calls, calls_resolution, calls_lead_s, window, replays)
                    figures["calls"] = calls_out
                else:
                    figures = replays()
                figures.pop("replay_started_monotonic", None)
                figures.pop("listed_monotonic", None)
                figures.pop("replay_ended_monotonic", None)
                results.append(figures)
                print(json.dumps(figures), file=sys.stderr, flush=True)
        psnr = picture_psnr(data_dir, keys, recording_id)
    return {"size": f"{size[0]}x{size[1]}", "seconds": seconds, "encoder": dict(replay_render.ENCODER_OPTIONS),
            "bitrate": replay_render.RenderPlan(0, 0, *size, True).bitrate, "picture_psnr_db": psnr,
            "workers": workers, "calls": calls, "calls_resolution": calls_resolution if calls else None,
            "cpu": _cpu(), "cores": os.cpu_count(), "av": av.__version__, "runs": results}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="1280x720")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--participants", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cpu-used", default=None, help="libvpx cpu-used for the replay encode (default: the renderer's)")
    p.add_argument("--in-process", action="store_true", help="render in threads of this process (comparison)")
    p.add_argument("--workers", type=int, default=None, help="render slots (default: the server's)")
    p.add_argument("--calls", type=int, default=0,
                   help="live three-party calls running meanwhile (python -m loadtest's server and clients)")
    p.add_argument("--calls-resolution", default="720p", help="the calls' video (python -m loadtest --resolution)")
    p.add_argument("--calls-lead", type=float, default=8.0, help="seconds of calls alone before the replays start")
    p.add_argument("--calls-window", type=float, default=None,
                   help="the calls' measurement window, seconds (default: lead + 30)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each participant count")
    p.add_argument("--cold", action="store_true",
                   help="no spare render processes started ahead (as the trainer's listing does, 2 s before)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    result = run((w, h), args.seconds, args.participants, args.cpu_used, args.in_process, args.workers,
                 args.calls, args.calls_resolution, args.calls_lead, args.calls_window, args.repeat, args.cold)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
