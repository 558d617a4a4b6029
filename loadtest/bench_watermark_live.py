"""Live watermark benchmark: server CPU and latency for one viewer, forwarded vs marked on the server.

    .venv/bin/python -m loadtest.bench_watermark_live [--seconds 15] [--repeat 2]
        [--modes off page server] [--width 1280 --height 720 --fps 30] [--json out.json]

Side by side in one run, against one real server process (run.py on 127.0.0.1): for each
room setting (`live_watermark` off / page / server, interleaved, `--repeat` rounds) a
fresh two-person room where the patient publishes a pre-encoded clip (a face photograph
in slow motion, VP8 at 1.5 Mbit/s, keyframe every 2 s, plus Opus; publishing costs no
encoding) and

  window A: the patient alone (the server receives, forwards to nobody);
  window B: plus one clinician who only watches (`--viewers N`: N of them);

the server process's CPU (/proc, all threads) is sampled in both windows: (B - A) / N is
what a viewer costs (with N > 1 in "server" rooms, the decode is shared by the N copies).
The viewer (in this process) really decodes what it gets and reads the frame index drawn
into each clip frame, so the latency from the publisher's send to the
viewer's decoded frame is measured the same way whether the server forwards or
re-encodes ("page" draws in the browser: to the server it is forwarding).

All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import fractions
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import av
from aiortc.mediastreams import MediaStreamError

from loadtest.clips import SweepAudioSpec, draw_marker, load_or_encode, luma_of, read_marker
from loadtest.harness import (
    admin_key_of,
    free_port,
    http_json,
    machine_info,
    proc_cpu_seconds,
    start_server,
    stop_process,
    wait_healthy,
)
from loadtest.participant import SyntheticParticipant
from loadtest.preencoded import EncodedClip, default_cache_dir
from loadtest.publisher import StampedClipTrack
from loadtest.synthetic_video import moving_photo
from media.ice import restrict_host_addresses

MODES = ("off", "page", "server")


# -- the clip -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PhotoClipSpec:
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 1_500_000
    seconds: float = 10.0
    keyframe_interval_s: float = 2.0


def photo_clip(spec: PhotoClipSpec, cache_dir: Path) -> EncodedClip:
    """The photograph in slow motion (loadtest.synthetic_video.moving_photo) with the frame index drawn
    top-left (loadtest.clips.draw_marker), VP8 realtime CBR as a browser sends it; cached."""
    path = cache_dir / (f"wm-live-{spec.width}x{spec.height}-{spec.fps}-{spec.bitrate}-{spec.seconds:g}-"
                        f"{spec.keyframe_interval_s:g}-av{av.__version__}.clip")
    if path.exists():
        try:
            return EncodedClip.load(path)
        except (ValueError, OSError):
            pass
    n, every = int(spec.seconds * spec.fps), max(1, round(spec.keyframe_interval_s * spec.fps))
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = spec.width, spec.height, "yuv420p"
    codec.time_base, codec.framerate = fractions.Fraction(1, spec.fps), fractions.Fraction(spec.fps)
    codec.bit_rate, codec.gop_size, codec.thread_count = spec.bitrate, every, 1
    rate = str(spec.bitrate)
    codec.options = {"deadline": "realtime", "cpu-used": "4", "lag-in-frames": "0", "auto-alt-ref": "0",
                     "minrate": rate, "maxrate": rate, "bufsize": rate, "undershoot-pct": "100",
                     "overshoot-pct": "15", "partitions": "0"}
    packets: list[av.Packet] = []
    for i, image in enumerate(moving_photo(spec.width, spec.height, n, seed=5, fps=spec.fps)):
        draw_marker(image, i)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, codec.time_base
        if i % every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    packets.sort(key=_pts)
    clip = EncodedClip(kind="video", codec="vp8", time_base=fractions.Fraction(1, spec.fps), duration=n,
                       packets=[bytes(p) for p in packets], pts=[_pts(p) for p in packets],
                       keyframes=[bool(p.is_keyframe) for p in packets], meta=asdict(spec))
    path.parent.mkdir(parents=True, exist_ok=True)
    clip.dump(path)
    return clip


def _pts(packet: av.Packet) -> int:
    assert packet.pts is not None  # the encoder stamps every packet with its frame's pts
    return packet.pts


# -- the watching clinician ---------------------------------------------------------------------------

class MeasuringViewer(SyntheticParticipant):
    """Decodes what it receives and notes (clip index, arrival) of every frame it can read."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.decoded: list[tuple[Optional[int], float]] = []
        self.video_bytes = 0

    async def _consume(self, track, received) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                received.frames += 1
                if track.kind == "video":
                    received.width, received.height = frame.width, frame.height
                    self.decoded.append((read_marker(luma_of(frame)), now))
        except MediaStreamError:
            pass

    def count_bytes(self) -> None:
        assert self.pc is not None  # called once the viewer has joined
        transport = self.pc.getTransceivers()[0].receiver.transport
        original = transport._handle_rtp_data

        async def counting(data: bytes, arrival_time_ms: int) -> None:
            if len(data) > 200:  # video-sized (Opus packets are ~100 bytes): close enough for kbit/s
                self.video_bytes += len(data)
            await original(data, arrival_time_ms)

        # wraps aiortc's handler of received RTP on purpose, to count the bytes
        transport._handle_rtp_data = counting  # type: ignore[method-assign]


def latencies_ms(decoded: list[tuple[Optional[int], float]], sends: list[tuple[int, float]]) -> list[float]:
    """For each decoded frame whose index was readable: arrival minus the latest earlier send of that index."""
    by_index: dict[int, list[float]] = {}
    for sent_index, sent_at in sends:
        by_index.setdefault(sent_index, []).append(sent_at)
    out = []
    for index, at in decoded:
        times = by_index.get(index) if index is not None else None
        if not times:
            continue
        k = bisect.bisect_right(times, at)
        if k:
            out.append((at - times[k - 1]) * 1000)
    return out


def _pct(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- one room setting -----------------------------------------------------------------------------------

async def measure_mode(mode: str, *, base_url: str, admin_key: Optional[str], server_pid: int, video, audio,
                       seconds: float, warmup: float, tag: str, viewers: int = 1) -> dict[str, Any]:
    loop = asyncio.get_running_loop()

    def call(method: str, path: str, body: Optional[dict] = None) -> dict:
        return http_json(method, base_url + path, body, admin_key)

    room_id = f"{tag}-{mode}"
    await loop.run_in_executor(None, call, "POST", "/api/rooms",
                               {"id": room_id, "name": f"watermark bench {mode}", "max_participants": 1 + viewers,
                                "processors": [], "live_watermark": mode})
    patient_token = (await loop.run_in_executor(None, call, "POST", f"/api/rooms/{room_id}/links",
                                                {"role": "patient", "identity": f"{room_id}-patient"}))["token"]
    viewer_tokens = [(await loop.run_in_executor(None, call, "POST", f"/api/rooms/{room_id}/links",
                                                 {"role": "doctor" if k == 0 else "expert", "name": f"Dr Bench {k}",
                                                  "identity": f"{room_id}-viewer-{k}", "permissions": ["subscribe"]}
                                                 ))["token"] for k in range(viewers)]

    async def cpu_window() -> float:
        c0, t0 = proc_cpu_seconds(server_pid), time.monotonic()
        await asyncio.sleep(seconds)
        return (proc_cpu_seconds(server_pid) - c0) / (time.monotonic() - t0)

    video_track, audio_track = StampedClipTrack(video), StampedClipTrack(audio)
    patient = SyntheticParticipant(base_url, patient_token, audio=audio_track, video=video_track)
    watchers = [MeasuringViewer(base_url, token) for token in viewer_tokens]
    doctor = watchers[0]  # the one whose frames are measured
    result: dict[str, Any] = {"mode": mode, "viewers": viewers}
    try:
        await patient.join(timeout=15)
        await asyncio.sleep(warmup)
        result["cpu_publisher_only"] = await cpu_window()

        for watcher in watchers:
            await watcher.join(timeout=15)
        await asyncio.gather(*(w.wait_for_frames(patient.id, "video", 10, timeout=30) for w in watchers))
        doctor.count_bytes()
        await asyncio.sleep(warmup)
        frames0, decoded0, bytes0, t0 = doctor.frames_from(patient.id, "video"), len(doctor.decoded), \
            doctor.video_bytes, time.monotonic()
        result["cpu_with_viewer"] = await cpu_window()
        elapsed = time.monotonic() - t0
        window = doctor.decoded[decoded0:]
        lat = latencies_ms(window, video_track.sends)
        result.update({
            "cpu_per_viewer": (result["cpu_with_viewer"] - result["cpu_publisher_only"]) / viewers,
            "viewer_fps": (doctor.frames_from(patient.id, "video") - frames0) / elapsed,
            "viewer_kbps": (doctor.video_bytes - bytes0) * 8 / elapsed / 1000,
            "frames_with_index": len(lat), "frames": len(window),
            "latency_ms_p50": _pct(lat, 0.5), "latency_ms_p95": _pct(lat, 0.95), "latency_ms_max": _pct(lat, 1.0),
        })
        seen = next((r for r in doctor.received.values() if r.kind == "video"), None)
        result["size"] = f"{seen.width}x{seen.height}" if seen else None
    finally:
        await asyncio.gather(*(w.close() for w in watchers), patient.close(), return_exceptions=True)
        try:
            await loop.run_in_executor(None, call, "DELETE", f"/api/rooms/{room_id}")
        except OSError:
            pass
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    restrict_host_addresses(["127.0.0.1"])
    spec = PhotoClipSpec(width=args.width, height=args.height, fps=args.fps, bitrate=args.bitrate)
    loop = asyncio.get_running_loop()
    video = await loop.run_in_executor(None, photo_clip, spec, default_cache_dir())
    audio = await loop.run_in_executor(None, load_or_encode, SweepAudioSpec(seconds=spec.seconds), default_cache_dir())
    report: dict[str, Any] = {"command": "python -m loadtest.bench_watermark_live " + " ".join(sys.argv[1:]),
                              "machine": machine_info(), "clip": {**asdict(spec), "kbps": round(video.bitrate / 1000)},
                              "seconds": args.seconds, "warmup": args.warmup, "runs": []}
    with tempfile.TemporaryDirectory(prefix="wm-live-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        server = start_server("ours", port, workdir)
        try:
            base_url = f"http://127.0.0.1:{port}"
            await loop.run_in_executor(None, wait_healthy, server, base_url)
            key = admin_key_of("ours", workdir)
            tag = f"wmb{int(time.time()) % 100000}"
            for rep in range(args.repeat):
                order = list(args.modes) if rep % 2 == 0 else list(reversed(args.modes))
                for mode in order:
                    print(f"[{time.strftime('%H:%M:%S')}] {mode}, round {rep + 1}/{args.repeat} ...", flush=True)
                    r = await measure_mode(mode, base_url=base_url, admin_key=key, server_pid=server.pid, video=video,
                                           audio=audio, seconds=args.seconds, warmup=args.warmup, tag=f"{tag}-{rep}",
                                           viewers=args.viewers)
                    r["round"] = rep
                    report["runs"].append(r)
                    print("  " + _line(r), flush=True)
        finally:
            stop_process(server, signal.SIGINT, 10)
    report["summary"] = summarize(report["runs"], list(args.modes))
    return report


def _line(r: dict) -> str:
    return (f"server CPU {r['cpu_publisher_only'] * 100:.1f} % publisher only, {r['cpu_with_viewer'] * 100:.1f} % "
            f"with {r['viewers']} viewer(s): {r['cpu_per_viewer'] * 100:.1f} % of a core per viewer; "
            f"viewer {r['viewer_fps']:.1f} fps {r['viewer_kbps']:.0f} kbit/s {r['size']}, "
            f"latency p50 {r['latency_ms_p50']:.0f} p95 {r['latency_ms_p95']:.0f} ms "
            f"({r['frames_with_index']}/{r['frames']} frames read)")


def summarize(runs: list[dict], modes: list[str]) -> list[dict]:
    rows = []
    for mode in modes:
        ok = [r for r in runs if r["mode"] == mode]
        if not ok:
            continue
        med = lambda key: statistics.median(r[key] for r in ok if r.get(key) is not None)  # noqa: E731
        rows.append({"mode": mode, "viewers": ok[0]["viewers"], "rounds": len(ok),
                     "cpu_per_viewer": med("cpu_per_viewer"),
                     "cpu_per_viewer_each": [round(r["cpu_per_viewer"] * 100, 1) for r in ok],
                     "cpu_publisher_only": med("cpu_publisher_only"), "viewer_fps": med("viewer_fps"),
                     "viewer_kbps": med("viewer_kbps"), "latency_ms_p50": med("latency_ms_p50"),
                     "latency_ms_p95": med("latency_ms_p95")})
    return rows


def markdown(summary: list[dict]) -> str:
    lines = ["| live_watermark | server CPU per viewer (rounds) | publisher alone | viewer fps | viewer kbit/s | "
             "send -> decoded p50 / p95 |", "|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        each = " / ".join(f"{v:.1f}" for v in s["cpu_per_viewer_each"])
        label = s["mode"] + (f" ({s['viewers']} viewers)" if s["viewers"] > 1 else "")
        lines.append(f"| {label} | {s['cpu_per_viewer'] * 100:.1f} % ({each}) | "
                     f"{s['cpu_publisher_only'] * 100:.1f} % | {s['viewer_fps']:.1f} | {s['viewer_kbps']:.0f} | "
                     f"{s['latency_ms_p50']:.0f} / {s['latency_ms_p95']:.0f} ms |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_watermark_live",
                                description=__doc__.split("\n")[0])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--seconds", type=float, default=15.0, help="each CPU window")
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--repeat", type=int, default=2, help="rounds, the modes interleaved (order reversed every round)")
    p.add_argument("--viewers", type=int, default=1,
                   help="clinicians watching (CPU per viewer: the increase / this; the first one's frames are timed)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--bitrate", type=int, default=1_500_000)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    report = asyncio.run(run(args))
    table = markdown(report["summary"])
    report["table_markdown"] = table
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
