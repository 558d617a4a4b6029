"""Forwarding benchmark: server CPU per forwarded stream, ours against an aiortc MediaRelay server.

    python -m loadtest.bench_forwarding --rooms 1 2 3 --duration 20 --json out.json

For each room count and each server kind (interleaved: ours and the baseline
take turns, so both are measured under the same machine conditions), this

1. starts the server as its own process on 127.0.0.1 and a free port:
   - ours: `run.py --media-host-address 127.0.0.1 --data-dir <tmp> --no-demo-room`,
     rooms and join tokens made through the admin REST API (key from the data dir);
   - relay: `python -m loadtest.relay_baseline` (decode + re-encode per subscriber);
2. starts ONE client process (this module, `_client` mode) that connects N
   three-party rooms of synthetic participants. Publishers replay a pre-encoded
   clip (loadtest.preencoded: 720p VP8 ~1.5 Mbit/s, keyframe every 2 s, Opus
   audio), so publishing costs no encoding. Receivers do not decode either: in
   the client process aiortc's decoders are replaced by a counter of the
   assembled (depacketized, jitter-buffered) frames and their bytes;
3. waits until every participant receives video from both others, lets it run
   `--warmup` seconds, then samples the SERVER process's CPU time
   (/proc/<pid>/stat utime+stime, all threads) and RSS over `--duration`
   seconds, together with what the clients received in that same window;
4. stops both processes (every step has a time limit) and prints a table.

Per room of three: 3 publishers x 2 subscribers = 6 forwarded video streams
(+ 6 audio). "CPU per video stream" divides the server's whole CPU share
(audio, RTCP, signalling included) by the nominal video stream count. When a
server cannot keep up it delivers fewer frames; the per-stream figure then
flatters it, so the table also shows the delivered frame rate and a cost per
"full-rate stream equivalent" (CPU share / (delivered fps / clip fps)).

All traffic stays on 127.0.0.1 (ICE host candidates restricted in every process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

# The process machinery lives in loadtest.harness, shared with `python -m loadtest`.
from loadtest.harness import (
    KINDS,
    REPO_ROOT,
    LineReader,
    admin_key_of,
    free_port,
    http_json,
    machine_cpu_ticks,
    machine_info,
    machine_usage,
    make_rooms,
    node_heartbeats,
    proc_cpu_seconds,
    proc_memory_mb,
    start_server_with_workers,
    tree_cpu_seconds,
    wait_healthy,
)
from loadtest.harness import child_env as _child_env
from loadtest.harness import emit as _emit
from loadtest.harness import stop_process as _stop_process
from loadtest.harness import tail as _tail

# ours with --workers N (and a redis-server of the bench's own): "ours-workers2"
WORKERS_KIND = "ours-workers"
BENCH_KINDS = (*KINDS, f"{WORKERS_KIND}2")

# --- the client process -----------------------------------------------------------------------


class CountedFrame:
    """What the client's stand-in decoder yields: sizes, not pixels."""

    __slots__ = ("nbytes", "width", "height", "keyframe")

    def __init__(self, nbytes: int, width: int, height: int, keyframe: bool) -> None:
        self.nbytes, self.width, self.height, self.keyframe = nbytes, width, height, keyframe


class CountingDecoder:
    """Replaces aiortc's decoders in the client process: counts assembled frames, decodes nothing."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.width = self.height = 0

    def decode(self, encoded_frame) -> list[CountedFrame]:
        data = encoded_frame.data
        keyframe = False
        # VP8 keyframe: P bit clear and the start code 9d 01 2a, then 14-bit width/height
        if self.kind == "video" and len(data) >= 10 and not data[0] & 1 and data[3:6] == b"\x9d\x01\x2a":
            keyframe = True
            self.width = int.from_bytes(data[6:8], "little") & 0x3FFF
            self.height = int.from_bytes(data[8:10], "little") & 0x3FFF
        return [CountedFrame(len(data), self.width, self.height, keyframe)]


def install_counting_decoders() -> None:
    import aiortc.rtcrtpreceiver
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    def counting_decoder(codec: RTCRtpCodecParameters) -> CountingDecoder:
        return CountingDecoder(codec.mimeType.split("/")[0].lower())

    # deliberately swaps aiortc's decoder factory for a stand-in whose "frames" are counts, not av frames
    aiortc.rtcrtpreceiver.get_decoder = counting_decoder  # type: ignore[assignment]


def _bench_participant_class():
    from loadtest.participant import SyntheticParticipant

    class BenchParticipant(SyntheticParticipant):
        """A synthetic participant that also counts received bytes and keyframes per mid."""

        def __post_init__(self) -> None:
            super().__post_init__()
            self.bytes_received: dict[str, int] = defaultdict(int)
            self.keyframes_received: dict[str, int] = defaultdict(int)

        def on_frame(self, frame, received) -> None:
            self.bytes_received[received.mid] += getattr(frame, "nbytes", 0)
            if getattr(frame, "keyframe", False):
                self.keyframes_received[received.mid] += 1

    return BenchParticipant


class BenchClient:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.rooms: list[list] = []
        self.publishers: list[dict] = []

    async def connect(self) -> None:
        from loadtest.clips import ClipSpec, SweepAudioSpec, load_or_encode
        from loadtest.preencoded import PreEncodedTrack

        cache_dir = Path(self.config["cache_dir"])
        video_spec = ClipSpec(**self.config["video"])
        video = load_or_encode(video_spec, cache_dir)
        audio = load_or_encode(SweepAudioSpec(**self.config["audio"]), cache_dir)
        Participant = _bench_participant_class()
        for r, tokens in enumerate(self.config["rooms"]):
            people = []
            for i, token in enumerate(tokens):
                # stagger the publishers over the clip so they do not send keyframes in step
                offset = (r * len(tokens) + i) * video_spec.keyframe_every
                tracks = {"audio": PreEncodedTrack(audio), "video": PreEncodedTrack(video, start_index=offset)}
                p = Participant(self.config["base_url"], token, audio=tracks["audio"], video=tracks["video"])
                self.publishers.append(tracks)
                await p.join(timeout=15)
                people.append(p)
            self.rooms.append(people)

    def pairs(self):
        """(room index, subscriber, publisher) for every forwarded direction."""
        for r, people in enumerate(self.rooms):
            for sub in people:
                for pub in people:
                    if sub is not pub:
                        yield r, sub, pub

    async def wait_flowing(self, timeout: float) -> dict:
        start = time.monotonic()
        while True:
            flowing = sum(1 for _, sub, pub in self.pairs() if sub.frames_from(pub.id, "video") > 0)
            total = sum(1 for _ in self.pairs())
            if flowing == total or time.monotonic() - start > timeout:
                return {"video_pairs_flowing": flowing, "video_pairs": total,
                        "complete": flowing == total, "settle_s": round(time.monotonic() - start, 2)}
            await asyncio.sleep(0.1)

    def snapshot(self) -> dict:
        streams = []
        for r, sub, pub in self.pairs():
            entry = {"room": r, "subscriber": sub.id, "publisher": pub.id}
            for kind in ("video", "audio"):
                mids = [m for m, info in sub.tracks_map.items()
                        if info and info["participant"] == pub.id and info["kind"] == kind and m in sub.received]
                entry[f"{kind}_frames"] = sum(sub.received[m].frames for m in mids)
                entry[f"{kind}_bytes"] = sum(sub.bytes_received[m] for m in mids)
                if kind == "video":
                    entry["video_keyframes"] = sum(sub.keyframes_received[m] for m in mids)
                    entry["video_size"] = next((f"{sub.received[m].width}x{sub.received[m].height}"
                                                for m in mids), None)
            streams.append(entry)
        sent = {kind: sum(t[kind].packets_sent for t in self.publishers) for kind in ("audio", "video")}
        late = max((t[kind].max_late_s for t in self.publishers for kind in t), default=0.0)
        return {"t": time.monotonic(), "streams": streams, "sent": sent, "publisher_max_late_s": round(late, 3)}

    def reset_lateness(self) -> None:
        for tracks in self.publishers:
            for track in tracks.values():
                track.reset_lateness()

    async def close(self) -> None:
        people = [p for room in self.rooms for p in room]
        await asyncio.wait_for(asyncio.gather(*(p.close() for p in people), return_exceptions=True), 10)


def window_stats(before: dict, after: dict) -> dict:
    """What the clients received between two snapshots."""
    seconds = after["t"] - before["t"]
    old = {(s["subscriber"], s["publisher"]): s for s in before["streams"]}
    streams = []
    for s in after["streams"]:
        b = old.get((s["subscriber"], s["publisher"]), {})
        d = {k: s[k] - b.get(k, 0) for k in ("video_frames", "video_bytes", "video_keyframes",
                                            "audio_frames", "audio_bytes")}
        d.update(room=s["room"], subscriber=s["subscriber"], publisher=s["publisher"], video_size=s["video_size"])
        streams.append(d)
    return {
        "seconds": round(seconds, 3),
        "streams": streams,
        "sent": {k: after["sent"][k] - before["sent"][k] for k in after["sent"]},
        "publisher_max_late_s": after["publisher_max_late_s"],
    }


async def client_main() -> None:
    loop = asyncio.get_running_loop()
    config = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    from media.ice import restrict_host_addresses

    restrict_host_addresses(["127.0.0.1"])
    if not config.get("decode"):
        install_counting_decoders()
    client = BenchClient(config)
    try:
        await client.connect()
        _emit({"event": "ready", **(await client.wait_flowing(config["settle_timeout"]))})
        marks: dict[str, dict] = {}
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "start":
                client.reset_lateness()
                marks["start"] = client.snapshot()
                _emit({"event": "started"})
            elif line == "stop":
                _emit({"event": "stopped", **window_stats(marks["start"], client.snapshot())})
            elif line in ("quit", ""):
                break
    except Exception as exc:  # the orchestrator shows this and the stderr log
        _emit({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        try:
            await client.close()
        except Exception:
            pass


def _client_entry() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(client_main())
    finally:
        sys.stdout.flush()
        os._exit(0)  # aiortc's worker threads must not keep a finished client alive


# --- the orchestrator -------------------------------------------------------------------------


def summarize(kind: str, rooms: int, fps: int, server_cpu: dict, window: dict) -> dict:
    streams = window["streams"]
    seconds = max(1e-6, window["seconds"])
    video_streams = rooms * 6
    frames = sum(s["video_frames"] for s in streams)
    expected = video_streams * fps * seconds
    delivered_fps = frames / seconds / max(1, len(streams))
    equivalent = frames / (fps * seconds)  # full-rate video streams' worth of frames
    share = server_cpu["cpu_share"]
    return {
        "video_streams": video_streams,
        "audio_streams": rooms * 6,
        "video_streams_with_frames": sum(1 for s in streams if s["video_frames"] > 0),
        "video_frames": frames,
        "video_frames_expected": round(expected),
        "video_delivery_ratio": round(frames / expected, 3) if expected else 0.0,
        "video_fps_per_stream": round(delivered_fps, 2),
        "video_kbps_per_stream": round(sum(s["video_bytes"] for s in streams) * 8 / seconds
                                       / max(1, len(streams)) / 1000, 1),
        "audio_frames": sum(s["audio_frames"] for s in streams),
        "audio_fps_per_stream": round(sum(s["audio_frames"] for s in streams) / seconds / max(1, len(streams)), 2),
        "cpu_share_per_video_stream": round(share / video_streams, 4),
        "cpu_share_per_full_rate_stream": round(share / equivalent, 4) if equivalent > 0 else None,
    }


def run_one(kind: str, rooms: int, args, video: dict, audio: dict) -> dict:
    result: dict[str, Any] = {"kind": kind, "rooms": rooms, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    workers = int(kind.removeprefix(WORKERS_KIND)) if kind.startswith(WORKERS_KIND) else 1
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        server = client = redis = None
        try:
            server_kind = "ours" if workers > 1 else kind
            server, redis = start_server_with_workers(server_kind, port, workdir, workers)
            wait_healthy(server, base_url)
            admin_key = admin_key_of(server_kind, workdir)
            made = make_rooms(server_kind, base_url, admin_key, rooms, processors=tuple(args.processors))
            tokens = [t for _, t in made]
            result["processors"], result["recording"] = list(args.processors), bool(args.record)
            client_log = open(workdir / "client.log", "wb")
            try:
                client = subprocess.Popen([sys.executable, "-m", "loadtest.bench_forwarding", "_client"],
                                          cwd=REPO_ROOT, env=_child_env(), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=client_log, text=True)
            finally:
                client_log.close()
            assert client.stdin is not None  # opened with stdin=PIPE
            reader = LineReader(client.stdout)
            config = {"base_url": base_url, "rooms": tokens, "video": video, "audio": audio,
                      "cache_dir": str(args.cache_dir), "settle_timeout": args.settle_timeout,
                      "decode": args.client_decode}
            client.stdin.write(json.dumps(config) + "\n")
            client.stdin.flush()
            result["ready"] = reader.expect("ready", args.settle_timeout + 15 * rooms + 30)
            if args.record and kind == "ours":
                for room_id, _ in made:  # every track of every room, encrypted, as in a recorded consultation
                    http_json("POST", f"{base_url}/api/rooms/{room_id}/recording", {"action": "start"}, admin_key)
            time.sleep(args.warmup)

            client.stdin.write("start\n")
            client.stdin.flush()
            reader.expect("started", 10)
            # (the server's process and its workers', if any)
            m0, s0 = machine_cpu_ticks(), tree_cpu_seconds(server.pid)
            c0, t0 = proc_cpu_seconds(client.pid), time.monotonic()
            samples, rss_samples, last_cpu, last_t = [], [], s0, t0
            while time.monotonic() - t0 < args.duration:
                time.sleep(min(1.0, max(0.0, args.duration - (time.monotonic() - t0))))
                cpu, now = tree_cpu_seconds(server.pid), time.monotonic()
                samples.append(round((cpu - last_cpu) / max(1e-6, now - last_t), 3))
                rss_samples.append(proc_memory_mb(server.pid)["rss_mb"])
                last_cpu, last_t = cpu, now
            s1, c1 = tree_cpu_seconds(server.pid), proc_cpu_seconds(client.pid)
            if redis is not None:
                result["workers"] = [{"rooms": n["rooms"], "participants": n["participants"]}
                                     for n in node_heartbeats(redis.url)]
            t1, m1 = time.monotonic(), machine_cpu_ticks()
            memory = proc_memory_mb(server.pid)
            client.stdin.write("stop\n")
            client.stdin.flush()
            window = reader.expect("stopped", 15)

            wall = t1 - t0
            result["server"] = {"cpu_seconds": round(s1 - s0, 3), "wall_seconds": round(wall, 3),
                                "cpu_share": round((s1 - s0) / wall, 4),
                                "cpu_share_per_second": samples, "rss_mb_per_second": rss_samples, **memory}
            result["client"] = {"cpu_share": round((c1 - c0) / wall, 4),
                                "publisher_max_late_s": window["publisher_max_late_s"],
                                "sent": window["sent"]}
            result["machine"] = machine_usage(m0, m1)
            # CPU the rest of the machine used meanwhile (other processes on a shared host), in cores
            result["machine"]["other_processes_cores"] = round(max(
                0.0, result["machine"]["busy_share_of_all_cores"] * (os.cpu_count() or 1)
                - result["server"]["cpu_share"] - result["client"]["cpu_share"]), 3)
            result["delivery"] = summarize(kind, rooms, video["fps"], result["server"], window)
            result["streams"] = window["streams"]
            client.stdin.write("quit\n")
            client.stdin.flush()
            try:
                client.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["server_log_tail"] = _tail(workdir / "server.log")
            result["client_log_tail"] = _tail(workdir / "client.log")
        finally:
            _stop_process(client, signal.SIGTERM, 5)
            _stop_process(server, signal.SIGINT, 10)
            if redis is not None:
                redis.stop()
    return result


def _median(values: list[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def compare(runs: list[dict], kinds: list[str], room_counts: list[int]) -> list[dict]:
    rows = []
    for rooms in room_counts:
        row: dict[str, Any] = {"rooms": rooms}
        for kind in kinds:
            ok = [r for r in runs if r["kind"] == kind and r["rooms"] == rooms and "error" not in r]
            row[kind] = None if not ok else {
                "runs": len(ok),
                "cpu_share": _median([r["server"]["cpu_share"] for r in ok]),
                "cpu_share_per_video_stream": _median([r["delivery"]["cpu_share_per_video_stream"] for r in ok]),
                "cpu_share_per_full_rate_stream": _median([r["delivery"]["cpu_share_per_full_rate_stream"]
                                                           for r in ok]),
                "video_fps_per_stream": _median([r["delivery"]["video_fps_per_stream"] for r in ok]),
                "video_kbps_per_stream": _median([r["delivery"]["video_kbps_per_stream"] for r in ok]),
                "rss_mb": _median([r["server"]["rss_mb"] for r in ok]),
                "client_cpu_share": _median([r["client"]["cpu_share"] for r in ok]),
                "machine_busy": _median([r["machine"]["busy_share_of_all_cores"] for r in ok]),
                "other_processes_cores": _median([r["machine"]["other_processes_cores"] for r in ok]),
            }
        if row.get("ours") and row.get("relay"):
            o, b = row["ours"], row["relay"]
            row["ratio_per_video_stream"] = (
                round(b["cpu_share_per_video_stream"] / o["cpu_share_per_video_stream"], 1)
                if o["cpu_share_per_video_stream"] else None)
            row["ratio_per_full_rate_stream"] = (
                round(b["cpu_share_per_full_rate_stream"] / o["cpu_share_per_full_rate_stream"], 1)
                if o["cpu_share_per_full_rate_stream"] and b["cpu_share_per_full_rate_stream"] else None)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], kinds: list[str]) -> str:
    def pct(v):
        return "-" if v is None else f"{v * 100:.1f} %"

    def num(v, fmt="{:.0f}"):
        return "-" if v is None else fmt.format(v)

    lines = [
        "| rooms | server | video streams | server CPU (share of one core) | CPU per video stream | "
        "delivered fps / stream | kbit/s / stream | CPU per full-rate stream | server RSS | client CPU | "
        "machine busy (all cores) | other processes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for kind in kinds:
            s = row.get(kind)
            if s is None:
                lines.append(f"| {row['rooms']} | {kind} | {row['rooms'] * 6} | failed | | | | | | | | |")
                continue
            lines.append(
                f"| {row['rooms']} | {kind} | {row['rooms'] * 6} | {pct(s['cpu_share'])} | "
                f"{pct(s['cpu_share_per_video_stream'])} | {num(s['video_fps_per_stream'], '{:.1f}')} | "
                f"{num(s['video_kbps_per_stream'])} | {pct(s['cpu_share_per_full_rate_stream'])} | "
                f"{num(s['rss_mb'])} MB | {pct(s['client_cpu_share'])} | {pct(s['machine_busy'])} | "
                f"{num(s['other_processes_cores'], '{:.2f}')} cores |"
            )
        if "ratio_per_video_stream" in row:
            lines.append(f"| {row['rooms']} | **relay / ours** | | | "
                         f"**{num(row['ratio_per_video_stream'], '{:.1f}')}x** | | | "
                         f"**{num(row['ratio_per_full_rate_stream'], '{:.1f}')}x** | | | | |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    from loadtest.preencoded import default_cache_dir

    p = argparse.ArgumentParser(
        prog="python -m loadtest.bench_forwarding",
        description="Server CPU per forwarded stream: consult-sfu vs an aiortc MediaRelay server")
    p.add_argument("--rooms", type=int, nargs="+", default=[1, 2, 3], help="room counts (three participants each)")
    p.add_argument("--kinds", nargs="+", choices=BENCH_KINDS, default=list(KINDS),
                   help="servers to measure; ours-workers2: ours with --workers 2 and a redis-server of its own")
    p.add_argument("--duration", type=float, default=20.0, help="measurement window per run, seconds")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds between 'media flows' and the window")
    p.add_argument("--settle-timeout", type=float, default=40.0,
                   help="seconds to wait for every participant to receive video from both others")
    p.add_argument("--repeat", type=int, default=1, help="measure every (rooms, server) this many times, interleaved")
    p.add_argument("--json", type=Path, help="write all results here")
    p.add_argument("--processors", type=lambda v: [x for x in v.split(",") if x], default=[],
                   help="frame processors for our rooms, comma-separated (default none: forwarding only)")
    p.add_argument("--record", action="store_true", help="record every room on our server during the window")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--bitrate", type=int, default=1_500_000, help="video clip bitrate, bit/s")
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--keyframe-interval", type=float, default=2.0, help="seconds between keyframes in the clip")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where encoded clips are kept")
    p.add_argument("--client-decode", action="store_true",
                   help="let the clients really decode what they receive (costs the client process a lot; "
                        "received byte counts and kbit/s are then not measured)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_client"]:
        _client_entry()
        return 0
    args = parse_args(argv)
    from dataclasses import asdict

    from loadtest.clips import ClipSpec, SweepAudioSpec, load_or_encode

    video_spec = ClipSpec(codec="vp8", width=args.width, height=args.height, fps=args.fps, bitrate=args.bitrate,
                          seconds=args.clip_seconds, keyframe_interval_s=args.keyframe_interval)
    audio_spec = SweepAudioSpec(seconds=args.clip_seconds)
    t = time.monotonic()
    video_clip = load_or_encode(video_spec, args.cache_dir)
    audio_clip = load_or_encode(audio_spec, args.cache_dir)
    print(f"clips ready in {time.monotonic() - t:.1f} s: video {args.width}x{args.height}@{args.fps} "
          f"{video_clip.bitrate / 1000:.0f} kbit/s, "
          f"{sum(video_clip.keyframes)} keyframes in {video_clip.seconds:g} s; "
          f"audio opus {audio_clip.bitrate / 1000:.0f} kbit/s", flush=True)

    command = "python -m loadtest.bench_forwarding " + " ".join(shlex.quote(a) for a in argv)
    report: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "repeat": args.repeat,
                     "client_decode": args.client_decode,
                     "video_clip": {**asdict(video_spec), "encoded_kbps": round(video_clip.bitrate / 1000, 1),
                                    "keyframes": sum(video_clip.keyframes)},
                     "audio_clip": {**asdict(audio_spec), "codec": "opus",
                                    "encoded_kbps": round(audio_clip.bitrate / 1000, 1)}},
        "runs": [],
    }
    video = {"width": args.width, "height": args.height, "fps": args.fps, "bitrate": args.bitrate,
             "seconds": args.clip_seconds, "keyframe_interval_s": args.keyframe_interval}
    audio = {"seconds": args.clip_seconds}
    turn = 0
    for rep in range(args.repeat):
        for rooms in args.rooms:
            order = list(args.kinds) if turn % 2 == 0 else list(reversed(args.kinds))
            turn += 1
            for kind in order:
                print(f"[{time.strftime('%H:%M:%S')}] {kind}, {rooms} room(s), run {rep + 1}/{args.repeat} ...",
                      flush=True)
                result = run_one(kind, rooms, args, video, audio)
                result["repeat"] = rep
                report["runs"].append(result)
                if "error" in result:
                    print(f"  FAILED: {result['error']}", flush=True)
                else:
                    d = result["delivery"]
                    print(f"  server CPU {result['server']['cpu_share'] * 100:.1f} % of a core, "
                          f"{d['cpu_share_per_video_stream'] * 100:.2f} % per video stream; "
                          f"{d['video_fps_per_stream']:.1f} fps and "
                          f"{d['video_kbps_per_stream']:.0f} kbit/s per stream "
                          f"({d['video_streams_with_frames']}/{d['video_streams']} streams with frames); "
                          f"RSS {result['server']['rss_mb']:.0f} MB; "
                          f"client CPU {result['client']['cpu_share'] * 100:.0f} %; "
                          f"machine busy {result['machine']['busy_share_of_all_cores'] * 100:.0f} % "
                          f"of {os.cpu_count()} cores "
                          f"(other processes {result['machine']['other_processes_cores']:.2f} cores)",
                          flush=True)
                if args.json:
                    args.json.write_text(json.dumps(report, indent=2))
    report["comparison"] = compare(report["runs"], list(args.kinds), list(args.rooms))
    report["table_markdown"] = markdown_table(report["comparison"], list(args.kinds))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print()
    print(report["table_markdown"])
    return 1 if any("error" in r for r in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
