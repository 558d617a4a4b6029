"""Load test under network impairment: latency, delivery, freezes and audio, per profile.

    python -m loadtest --rooms 1 --duration 30 --resolution 480p --profile clean,4g,bad-wifi,loss-30,narrow \
        --json /tmp/loadtest.json --plot /tmp/loadtest.png

For each server kind (`--server ours`, `relay`, or both) and each profile, in turn:

1. the server is started on 127.0.0.1 and a free port (ours: run.py; relay: the
   aiortc MediaRelay baseline, loadtest.relay_baseline) unless `--url` names a
   running one (loopback only);
2. one client process (loadtest.client) joins `--rooms` three-party rooms
   (patient, doctor, expert), every peer connection impaired in both directions
   as the profile says (loadtest.impairment; seeded, repeatable); publishers
   replay a pre-encoded clip (loadtest.clips) and log each frame's send time;
3. once everyone receives video from both others: `--warmup` seconds, then the
   measurement window of `--duration` seconds (server CPU and RSS sampled from
   /proc when we started the server), then `--drain` seconds for late frames;
4. the client's records become per-profile figures (loadtest.metrics), printed
   as a table and written as JSON; `--plot` draws the latency CDFs.

Every step has a time limit; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Protocol
from urllib.parse import urlparse

from loadtest import report
from loadtest.clips import RESOLUTIONS, ClipSpec, SweepAudioSpec
from loadtest.harness import (
    KINDS,
    REPO_ROOT,
    ROLES,
    LineReader,
    ProcessSampler,
    child_env,
    close_rooms,
    free_port,
    http_json,
    machine_cpu_ticks,
    machine_info,
    machine_usage,
    make_rooms,
    proc_memory_mb,
    source_revision,
    start_server,
    stop_process,
    tail,
    wait_healthy,
)
from loadtest.impairment import KNOWN_PROFILES, PROFILES, Profile, parse_profiles
from loadtest.layer_share import LayerSampler, attach_layer_shares, layer_shares, shares_json
from loadtest.metrics import AUDIO_DEADLINE_S, REUSE_HORIZON_S, run_metrics
from loadtest.receiver import MODES
from loadtest.server_metrics import server_metrics
from loadtest.step_recovery import DELAY_BOUND_S, step_recovery

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def jitter_buffer_target(value: str) -> str:
    """'auto', or milliseconds within what a browser accepts for RTCRtpReceiver.jitterBufferTarget."""
    if value == "auto":
        return value
    try:
        ms = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or milliseconds, got {value!r}") from None
    if not 0 <= ms <= 4000:
        raise argparse.ArgumentTypeError("jitterBufferTarget is 0-4000 ms")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    from loadtest.preencoded import default_cache_dir

    profiles = "; ".join(f"{p.name}: {p.description}" for p in KNOWN_PROFILES.values())
    p = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"Profiles: {profiles}.")
    p.add_argument("--rooms", type=int, default=1, help="three-party rooms (patient, doctor, expert); default 1")
    p.add_argument("--duration", type=float, default=30.0, help="measurement window per profile, seconds")
    p.add_argument("--resolution", choices=list(RESOLUTIONS), default="480p")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument("--profile", action="append", default=None,
                   help="impairment profile (repeatable or a comma list); default: all, in order")
    p.add_argument("--server", action="append", default=None,
                   help="ours (default) and/or relay (the aiortc MediaRelay baseline); repeatable or a comma list")
    p.add_argument("--url", help="a running server on loopback instead of starting one per profile "
                                 "(ours needs --admin-key; server CPU/RSS only with --server-pid)")
    p.add_argument("--admin-key", help="admin API key of the --url server, or @path to its admin.key")
    p.add_argument("--server-pid", type=int, help="pid of the --url server, to sample its CPU and memory")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--plot", type=Path, help="write the latency CDF plot here (PNG)")
    p.add_argument("--receiver", choices=MODES, default="browser",
                   help="client receive behaviour: browser-like (libwebrtc's NACK retries, decodability-aware "
                        "frame buffer, keyframe requests; default) or aiortc's stock jitter buffer and NACK")
    p.add_argument("--jitter-buffer-target", default="auto", type=jitter_buffer_target,
                   help="browser receivers' RTCRtpReceiver.jitterBufferTarget for video: 'auto' (our pages' "
                        "policy, static/js/playout-policy.js: raised while frames freeze, up to 450 ms), or "
                        "milliseconds (fixed; 0: the browser's own target)")
    p.add_argument("--probe-role", default="doctor",
                   help="whose receivers really decode (glass-to-glass latency): a role, 'all' or 'none'")
    p.add_argument("--publisher-pli", choices=("keyframe", "ignore"), default="keyframe",
                   help="publishers answer PLI with a keyframe (as browsers do) or ignore it")
    p.add_argument("--publisher-adapt", choices=("auto", "always", "off"), default="auto",
                   help="publishers follow the server's REMB by switching between encodings of the clip at "
                        "100/60/35/20 %% of its bitrate (the last two at 2/3 and 1/2 of its size), as a browser "
                        "encoder adapts; auto: in profiles with a "
                        "bandwidth cap (encoding the ladder once takes a while; clips are cached)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds between 'media flows' and the window")
    p.add_argument("--drain", type=float, default=REUSE_HORIZON_S,
                   help="seconds after the window for late frames (a frame counts as delivered if shown within "
                        f"{REUSE_HORIZON_S:g} s of being sent)")
    p.add_argument("--settle-timeout", type=float, default=40.0,
                   help="seconds to wait for every participant to receive video from both others")
    p.add_argument("--audio-red", choices=("auto", "off"), default="auto",
                   help="publishers send RED (each Opus packet also carries the previous one) and subscribers accept "
                        "it where the server's offer lists red first, as Chrome does; auto: with --receiver browser "
                        "(stock aiortc negotiates Opus only)")
    p.add_argument("--video-fec", choices=("auto", "off", "downlink"), default="auto",
                   help="video RED + ULPFEC where the server offers it, as Chrome does: subscribers accept it and "
                        "rebuild lost packets from it, publishers send RED with ULPFEC at Chrome's rate "
                        "(loadtest/video_fec_sender.py); downlink: subscribers only (publishing sections answered "
                        "without it); auto: both, with --receiver browser")
    p.add_argument("--simulcast", choices=("auto", "off"), default="auto",
                   help="publishers send their camera as simulcast layers (the clip ladder's full-size, 2/3- and "
                        "half-size encodings for h, m, l; loadtest/simulcast_sender.py) where our server's offer asks "
                        "for them, as Chrome does; off: they answer without simulcast and send one stream")
    p.add_argument("--transport-cc", choices=("auto", "off"), default="auto",
                   help="subscribers answer transport-wide congestion control where the server offers it and send "
                        "its feedback every 100 ms (the arrival time of every packet; loadtest/transport_feedback.py), "
                        "as Chrome does; auto: with --receiver browser; off: answered without it (REMB only)")
    p.add_argument("--audio-fec", choices=("auto", "off"), default="auto",
                   help="the audio clip carries Opus in-band FEC for the profile's uplink loss, as Chrome's encoder "
                        "does (loss learnt from receiver reports, capped at 20 %%); auto: with --receiver browser")
    p.add_argument("--audio-deadline-ms", type=float, default=AUDIO_DEADLINE_S * 1000,
                   help="an audio packet is played in time if it arrives this soon after it was sent")
    p.add_argument("--processors", type=lambda v: [x for x in v.split(",") if x], default=[],
                   help="frame processors for our rooms, comma-separated (default none: forwarding only)")
    p.add_argument("--seed", type=int, default=1, help="impairment seed (same seed, same loss pattern)")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--bitrate", type=int, help="video clip bitrate, bit/s (default: per resolution)")
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--keyframe-interval", type=float, default=2.0, help="seconds between keyframes in the clip")
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where encoded clips are kept")
    p.add_argument("--keep-records", type=Path, help="copy each run's raw client record (every frame event) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        args.profiles = parse_profiles(args.profile or [",".join(PROFILES)])
    except ValueError as exc:
        p.error(str(exc))
    args.servers = []
    for value in args.server or ["ours"]:
        for name in (n.strip() for n in value.split(",")):
            if name not in KINDS:
                p.error(f"unknown server {name!r}; choose from {', '.join(KINDS)}")
            if name not in args.servers:
                args.servers.append(name)
    if args.url:
        host = urlparse(args.url).hostname
        if host not in LOOPBACK_HOSTS:
            p.error("--url must be a loopback address (127.0.0.1, localhost, ::1): the load test sends nowhere else")
        if len(args.servers) > 1:
            p.error("--url is one server: name its kind with one --server")
    if args.rooms < 1 or args.duration <= 0:
        p.error("need --rooms >= 1 and --duration > 0")
    if args.clip_seconds < REUSE_HORIZON_S + 1:
        p.error(f"--clip-seconds must be at least {REUSE_HORIZON_S + 1:g}: a clip frame is identified by its "
                "content, so the clip must not repeat within the latencies measured")
    return args


def _admin_key(value: Optional[str]) -> Optional[str]:
    if value and value.startswith("@"):
        return Path(value[1:]).read_text().strip()
    return value or os.environ.get("CONSULT_ADMIN_KEY")


class WindowMarker(Protocol):
    def mark(self, name: str) -> None: ...


class Progress:
    """One tqdm bar over every run's warm-up + window + drain; phases and live counts in the postfix."""

    def __init__(self, total_s: float, enabled: bool) -> None:
        self.bar = None
        self._total = round(total_s)  # the bar's total, kept here as tqdm types its own as Optional
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self._total, unit="s", dynamic_ncols=True, file=sys.stderr,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]{postfix}")
        self._base = 0.0

    def run(self, label: str) -> None:
        if self.bar:
            self.bar.set_description(label)

    def update(self, done_in_run: float, postfix: str) -> None:
        if self.bar:
            self.bar.n = min(self._total, self._base + done_in_run)
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.refresh()

    def finish_run(self, run_total: float) -> None:
        self._base += run_total
        self.update(0, "")

    def write(self, text: str) -> None:
        if self.bar:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def audio_feature_on(setting: str, receiver: str) -> bool:
    """--audio-red / --audio-fec / --video-fec (its sending side) / --transport-cc: auto models Chrome with the
    browser receiver, stock aiortc (plain Opus and VP8, no transport-cc) otherwise."""
    return setting == "auto" and receiver == "browser"


def video_fec_on(setting: str, receiver: str) -> bool:
    """--video-fec on the receive side: auto and downlink, with the browser receiver."""
    return setting in ("auto", "downlink") and receiver == "browser"


def profile_caps_rate(profile: Profile) -> bool:
    links = [profile.uplink, profile.downlink] + [spec for _, up, down in profile.roles for spec in (up, down)]
    return any(spec.rate_kbps or spec.rate_steps for spec in links)


# libwebrtc's Opus encoder caps the loss it configures (AudioEncoderOpusImpl::SetProjectedPacketLossRate,
# kMaxPacketLossFraction = 0.2): more expected loss buys no more protection there.
CHROME_MAX_OPUS_LOSS_PERCENT = 20


def opus_fec_loss_percent(profile: Profile) -> int:
    """The packet loss Chrome's Opus encoder would be told to expect here: 0 on clean uplinks.

    Chrome learns it from the receiver reports on its uplink (smoothed, time constant
    10 s); a run is long enough for that to settle, so the profile's largest mean
    uplink loss over the roles stands in for it (a Gilbert-Elliott link's `burst_loss`
    is its long-run mean). Queue drops at a rate cap are left out: they depend on the load.
    """
    loss = max(max(up.loss, up.burst_loss) for up, _ in (profile.links_for(role) for role in ROLES))
    return min(CHROME_MAX_OPUS_LOSS_PERCENT, round(loss * 100))


def client_config(args, kind: str, profile: Profile, tokens: list[list[str]], base_url: str,
                  record_path: Path) -> dict[str, Any]:
    width, height, default_bitrate = RESOLUTIONS[args.resolution]
    video = ClipSpec(codec=args.codec, width=width, height=height, fps=args.fps,
                     bitrate=args.bitrate or default_bitrate, seconds=args.clip_seconds,
                     keyframe_interval_s=args.keyframe_interval)
    probe_roles = {"all": ["patient", "doctor", "expert"], "none": []}.get(args.probe_role, [args.probe_role])
    return {
        "base_url": base_url, "rooms": tokens, "profile": profile.to_json(), "seed": args.seed,
        "video": asdict(video),
        "audio": asdict(SweepAudioSpec(seconds=args.clip_seconds, fec_loss_percent=opus_fec_loss_percent(profile)
                                       if audio_feature_on(args.audio_fec, args.receiver) else 0)),
        # red only where the server offers it (the relay baseline does not)
        "audio_red": audio_feature_on(args.audio_red, args.receiver),
        "video_fec": video_fec_on(args.video_fec, args.receiver),
        "video_fec_uplink": audio_feature_on(args.video_fec, args.receiver),
        # only where the server offers it (the relay baseline does not)
        "transport_cc": audio_feature_on(args.transport_cc, args.receiver),
        # layers are encoded beforehand only where they can be asked for (the relay offers no simulcast)
        "simulcast": args.simulcast == "auto" and kind == "ours",
        "cache_dir": str(args.cache_dir) if args.cache_dir else None,
        "receiver": args.receiver, "probe_roles": probe_roles,
        "jitter_buffer_target_s": (None if args.jitter_buffer_target == "auto"
                                   else float(args.jitter_buffer_target) / 1000),
        # the relay re-encodes: bytes cannot identify frames there, the drawn index can (after decoding)
        "identify_by_marker": kind == "relay",
        "keyframe_on_pli": args.publisher_pli == "keyframe",
        "audio_deadline_s": args.audio_deadline_ms / 1000,
        # publishers follow REMB over a bitrate ladder where a link is capped (or when asked to)
        "adaptive": args.publisher_adapt == "always" or (args.publisher_adapt == "auto" and profile_caps_rate(profile)),
        "settle_timeout": args.settle_timeout, "warmup": args.warmup, "duration": args.duration,
        "drain": args.drain, "record_path": str(record_path),
        "budget_s": args.settle_timeout + args.warmup + args.duration + args.drain + 60 + 20 * args.rooms,
    }


def run_once(args, kind: str, profile: Profile, progress: Progress,
             window_markers: Sequence[WindowMarker] = ()) -> tuple[dict[str, Any], dict]:
    """One (server, profile) run. Returns (result, samples for the plot). Each of `window_markers`
    is told "window_start" and "window_end" as the measurement window opens and closes."""
    run_total = args.warmup + args.duration + args.drain
    result: dict[str, Any] = {"server": kind, "profile": profile.name, "key": f"{kind}/{profile.name}",
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    samples: dict = {}
    server = client = sampler = client_sampler = None
    layer_sampler: Optional[LayerSampler] = None
    room_ids: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"loadtest-{kind}-{profile.name}-") as tmp:
        workdir = Path(tmp)
        try:
            if args.url:
                base_url = args.url.rstrip("/")
                admin_key = _admin_key(args.admin_key)
                server_pid = args.server_pid
                wait_healthy(None, base_url, timeout=10)
            else:
                port = free_port()
                base_url = f"http://127.0.0.1:{port}"
                server = start_server(kind, port, workdir)
                server_pid = server.pid
                wait_healthy(server, base_url)
                admin_key = None if kind == "relay" else (workdir / "data" / "admin.key").read_text().strip()
            rooms = make_rooms(kind, base_url, admin_key, args.rooms, video_codec=args.codec, prefix="load",
                               processors=tuple(args.processors))
            room_ids = [room_id for room_id, _ in rooms]
            if server_pid:
                sampler = ProcessSampler(server_pid, tree=True).start()  # with its workers, if any
            machine_before: Optional[dict] = None
            record_path = workdir / "record.json"
            config = client_config(args, kind, profile, [t for _, t in rooms], base_url, record_path)
            log = open(workdir / "client.log", "wb")
            try:
                client = subprocess.Popen([sys.executable, "-m", "loadtest.client"], cwd=REPO_ROOT, env=child_env(),
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
            finally:
                log.close()
            assert client.stdin is not None  # opened with stdin=PIPE
            client.stdin.write(json.dumps(config) + "\n")
            client.stdin.flush()
            reader = LineReader(client.stdout)
            client_sampler = ProcessSampler(client.pid).start()
            deadline = time.monotonic() + config["budget_s"] + 10
            phase_base = {"warmup": 0.0, "measure": args.warmup, "drain": args.warmup + args.duration}
            while True:
                event = reader.next(max(0.1, deadline - time.monotonic()))
                if event is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the client did not finish within {config['budget_s'] + 10:.0f} s")
                    continue
                name = event.get("event")
                if name == "progress":
                    if event["phase"] == "settle":
                        progress.update(0, f"settling: {event['flowing']}/{event['pairs']} video pairs flowing")
                    else:
                        progress.update(phase_base[event["phase"]] + event["elapsed"],
                                        f"{event['phase']}: {event['frames_rendered']} frames rendered")
                elif name == "ready":
                    result["ready"] = {k: v for k, v in event.items() if k != "event"}
                    if not event["complete"]:
                        progress.write(f"  {kind}/{profile.name}: only {event['video_pairs_flowing']}/"
                                       f"{event['video_pairs']} video pairs flowing after {event['settle_s']} s; "
                                       "measuring anyway")
                elif name == "clips":
                    result["clip"] = {k: v for k, v in event.items() if k != "event"}
                elif name == "window_start":
                    machine_before = machine_cpu_ticks()
                    if kind == "ours":
                        layer_sampler = LayerSampler(base_url, admin_key, room_ids).start()
                    for marker in (sampler, client_sampler, *window_markers):
                        if marker:
                            marker.mark("window_start")
                elif name == "window_end":
                    for marker in (sampler, client_sampler, *window_markers):
                        if marker:
                            marker.mark("window_end")
                    if layer_sampler is not None:
                        layer_sampler.stop()
                    if machine_before is not None:
                        result["machine_usage"] = machine_usage(machine_before, machine_cpu_ticks())
                    if sampler:
                        result["server_rss_mb"] = proc_memory_mb(server_pid)["rss_mb"]
                    if kind == "ours":
                        result["server_media"] = server_media(base_url, admin_key, room_ids)
                        result["server_metrics"] = server_metrics(base_url, admin_key)  # as Prometheus sees it
                elif name == "done":
                    break
            record = json.loads(record_path.read_text())
            if args.keep_records:
                args.keep_records.mkdir(parents=True, exist_ok=True)
                shutil.copy(record_path, args.keep_records / f"{kind}-{profile.name}.json")
            figures = run_metrics(record, deadline_s=args.audio_deadline_ms / 1000)
            summary = figures["summary"]
            if kind == "relay":
                # re-encoded audio cannot be matched to what was sent, nor frames before decoding
                summary["audio_in_time_ratio"] = None
                summary["audio_in_time_by_deadline_ms"] = None
                summary["audio_fec_ratio"] = summary["audio_red_ratio"] = None
                summary["frames_complete_ratio"] = None
                summary["relay_note"] = ("the relay re-encodes: frames are identified only after decoding, so "
                                         "transport latency, frames complete and audio in time are not measurable")
            result.update(summary)
            result["video_fec"] = record.get("video_fec")  # whole run: FEC packets received, packets rebuilt
            result["video_fec_uplink"] = record.get("video_fec_uplink")  # publishers' RED/ULPFEC sent
            result["transport_cc"] = record.get("transport_cc")  # per subscriber: its transport-cc feedback sent
            result["frames_sent"] = sum(s["frames_sent"] for s in figures["video_streams"])
            result["frames_sent_probes"] = sum(s["frames_sent"] for s in figures["video_streams"] if s["probe"])
            result["server_cpu_core_share"] = None
            if sampler:
                share = sampler.share_between("window_start", "window_end")
                result["server_cpu_core_share"] = None if share is None else round(share, 4)
                window = (record["window"]["start"], record["window"]["end"])
                inside = [s for s in sampler.samples if window[0] <= s["t"] <= window[1] + 1]
                result["server_rss_mb_max"] = max((s["rss_mb"] for s in inside), default=None)
                result["server_samples"] = [{"t": round(s["t"] - window[0], 2), "cpu_share": s["cpu_share"],
                                             "rss_mb": s["rss_mb"]} for s in inside]
            result.setdefault("server_rss_mb", None)
            client_share = client_sampler.share_between("window_start", "window_end")
            result["client_cpu_core_share"] = None if client_share is None else round(client_share, 4)
            result["client_loop_lag_ms"] = record.get("client_loop_lag_ms")
            usage = result.get("machine_usage")
            if usage is not None:
                # CPU the rest of the machine used meanwhile (other processes on a shared host), in cores
                usage["other_processes_cores"] = round(max(0.0, usage["busy_share_of_all_cores"] * (os.cpu_count() or 1)
                                                           - (result["server_cpu_core_share"] or 0)
                                                           - (result["client_cpu_core_share"] or 0)), 2)
            if layer_sampler is not None:
                result["simulcast"] = simulcast_summary(record, layer_sampler, figures["video_streams"])
            result["steps"] = step_recovery(record, layer_sampler.samples if layer_sampler is not None else ())
            result["video_streams_detail"] = figures["video_streams"]
            result["audio_streams_detail"] = figures["audio_streams"]
            result["impairment_counters"] = record["impairment"]
            result["publishers"] = record["publishers"]
            result["receivers"] = record["receivers"]
            result["participants"] = record["participants"]
            result["clip"] = {**result.get("clip", {}), **record["clip"]}
            samples = {"latency_s": figures["samples"]["latency_s"], "transport_s": figures["samples"]["transport_s"]}
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            result["server_log_tail"] = tail(workdir / "server.log")
            result["client_log_tail"] = tail(workdir / "client.log")
        finally:
            for s in (sampler, client_sampler):
                if s:
                    s.stop()
            if layer_sampler is not None:
                layer_sampler.stop()
            stop_process(client, signal.SIGTERM, 10)
            stop_process(server, signal.SIGINT, 10)
            if args.url and kind == "ours" and room_ids:
                close_rooms(base_url, _admin_key(args.admin_key), room_ids)
            progress.finish_run(run_total)
    return result, samples


def simulcast_summary(record: dict[str, Any], layer_sampler: LayerSampler, video_streams: list[dict]
                      ) -> dict[str, Any]:
    """Which layer each subscriber's video stream carried over the window (the server's admin API, sampled),
    added to each stream's figures too; and what the publishers sent (their SimulcastSender counters)."""
    shares = layer_shares(layer_sampler.samples, end=record["window"]["end"])
    attach_layer_shares(video_streams, shares)
    layered = {pid: counters["video"]["simulcast"] for pid, counters in record["publishers"].items()
               if counters.get("video", {}).get("simulcast")}
    return {"publishers_simulcasting": len(layered), "samples": len(layer_sampler.samples),
            "sample_errors": layer_sampler.errors, "streams": shares_json(shares),
            "notes": sorted({note for c in layered.values() for note in c.get("notes", [])})}


def server_media(base_url: str, admin_key: Optional[str], room_ids: list[str]) -> dict[str, Any]:
    """The server's own counters at the end of the window (admin API): per room, and the uplink
    video totals (what publishers' FEC rebuilt, NACKs, gaps given up, keyframes asked for)."""
    rooms: dict[str, Any] = {}
    for room_id in room_ids:
        try:
            rooms[room_id] = http_json("GET", f"{base_url}/api/rooms/{room_id}/media", key=admin_key)["participants"]
        except (OSError, KeyError, ValueError) as exc:
            rooms[room_id] = {"error": str(exc)}
    video = [peer["published"]["video"] for peers in rooms.values() if "error" not in peers
             for peer in peers.values() if "video" in peer.get("published", {})]
    fec = [v["uplink_fec"] for v in video if v.get("uplink_fec")]
    uplink = {
        "publishers": len(video), "packets": sum(v["packets"] for v in video), "lost": sum(v["lost"] for v in video),
        "fec_received": sum(f["fec_received"] for f in fec), "fec_rebuilt": sum(f["rebuilt"] for f in fec),
        "duplicates_dropped": sum(v["duplicates_dropped"] for v in video),
        "keyframe_requests": sum(v["keyframe_requests"] for v in video),
        **{f"nack_{k}": sum(v["nack"][k] for v in video) for k in ("nacked", "recovered", "given_up", "not_media")},
    }
    return {"uplink_video": uplink, "rooms": rooms}


def describe_step(step: dict[str, Any], participants: list[dict[str, Any]]) -> str:
    """One line for a rate step: who, when, to what, and how fast delay and layers came back."""
    role = next((p["role"] for p in participants if p["id"] == step["subscriber"]), step["subscriber"])
    rate = "uncapped" if step["kbps"] is None else f"{step['kbps']:g} kbit/s"
    parts = [f"{role}'s downlink {rate} at {step['at_s']:g} s of the window",
             f"media delay p95 <= {DELAY_BOUND_S * 1000:.0f} ms after {_seconds(step['delay_ok_after_s'])}"]
    if "top_layer_after_s" in step:
        parts.append(f"every video at the top layer after {_seconds(step['top_layer_after_s'])}")
    return "; ".join(parts)


def _seconds(value: Optional[float]) -> str:
    return "- (never)" if value is None else f"{value:g} s"


def warnings_for(result: dict[str, Any]) -> list[str]:
    """What could make a run's figures describe the test rig rather than the server."""
    out = []
    ready = result.get("ready") or {}
    if ready and not ready.get("complete"):
        out.append(f"only {ready['video_pairs_flowing']}/{ready['video_pairs']} video pairs flowing when "
                   "measurement began")
    lag = (result.get("client_loop_lag_ms") or {}).get("p99")
    if lag is not None and lag > 20:
        out.append(f"the client's event loop lagged (p99 {lag:.0f} ms): client-side delay is in the latencies")
    late = max((p["video"]["max_late_ms"] for p in (result.get("publishers") or {}).values()), default=0)
    if late > 50:
        out.append(f"publishers fell up to {late:.0f} ms behind real time (client overload)")
    other = (result.get("machine_usage") or {}).get("other_processes_cores")
    if other is not None and other > 0.3:
        out.append(f"other processes used {other:.2f} cores of {os.cpu_count()} during the window")
    return out


def parameters(args, argv: list[str]) -> dict[str, Any]:
    width, height, default_bitrate = RESOLUTIONS[args.resolution]
    return {
        "command": "python -m loadtest " + " ".join(shlex.quote(a) for a in argv),
        "rooms": args.rooms, "duration_s": args.duration, "warmup_s": args.warmup, "drain_s": args.drain,
        "resolution": args.resolution, "width": width, "height": height, "fps": args.fps, "codec": args.codec,
        "bitrate": args.bitrate or default_bitrate, "clip_seconds": args.clip_seconds,
        "keyframe_interval_s": args.keyframe_interval, "receiver": args.receiver, "probe_role": args.probe_role,
        "jitter_buffer_target": args.jitter_buffer_target,
        "publisher_pli": args.publisher_pli, "publisher_adapt": args.publisher_adapt,
        "audio_deadline_ms": args.audio_deadline_ms, "audio_red": args.audio_red, "audio_fec": args.audio_fec,
        "video_fec": args.video_fec, "simulcast": args.simulcast, "transport_cc": args.transport_cc,
        "seed": args.seed,
        "url": args.url,
    }


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    params = parameters(args, argv)
    machine = machine_info()
    runs = [(kind, profile) for kind in args.servers for profile in args.profiles]
    progress = Progress(len(runs) * (args.warmup + args.duration + args.drain), not args.no_progress)
    results, samples = [], {}
    try:
        for kind, profile in runs:
            progress.run(f"{kind}/{profile.name}")
            result, run_samples = run_once(args, kind, profile, progress)
            result.update(parameters=params, profile_description=profile.description,
                          profile_links=profile.to_json(), source=source_revision(), machine=machine)
            result["warnings"] = warnings_for(result)
            results.append(result)
            samples[result["key"]] = run_samples
            if "error" in result:
                progress.write(f"  {kind}/{profile.name} FAILED: {result['error']}")
            if args.json:
                report.write_json(args.json, {"tool": "python -m loadtest", **params, "machine": machine,
                                              "runs": results})
    finally:
        progress.close()
    if args.plot:
        report.plot_latency_cdf(results, samples, args.plot)
    print()
    print(report.markdown_table(results))
    for result in results:
        for warning in result.get("warnings", []):
            print(f"note: {result['key']}: {warning}")
        for step in result.get("steps", []):
            print(f"step: {result['key']}: {describe_step(step, result.get('participants', []))}")
    print("\ng2g = glass-to-glass on the probe receivers (sent by the publisher -> decoded; the clip is pre-encoded, "
          "so capture and encode time are not included); transport = sent -> every packet of the frame arrived; "
          f"audio in time = playable {args.audio_deadline_ms:.0f} ms after being sent: the packet or its RED copy "
          "arrived by then, or the next packet, carrying Opus in-band FEC (a lower-quality copy), did; "
          "audio RED / FEC = shares of packets sent first in time as a RED copy / played from FEC.")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
