"""The call the product exists for, in real Chromium: the patient on a narrow downlink.

    python -m loadtest.bench_narrow_downlink --runs 2 --json /tmp/bench-narrow-downlink.json
    python -m loadtest.bench_narrow_downlink --cap-kbit 700 --compare before=/path/to/other/checkout/run.py

A patient page, a doctor console and an expert console join one room in headless
Chromium (the harness of tests/browser: root, chromium, chromedriver, iproute2 with
tc; the fake camera is 1280x720 and the pages publish simulcast). As in
tests/browser/test_narrow_downlink.py, the server runs in one network namespace and
the patient's browser in another, joined by a veth pair whose server end is shaped by
tbf (`--cap-kbit`, `--queue-ms` of queue): everything the server sends the patient,
media and signalling, goes through that cap, as on a phone's mobile link; the doctor's
and the expert's pages stay uncapped. After `--warmup` seconds from loading the pages,
every page's getStats is read every 0.5 s for `--seconds`, and the server's admin API
(/api/rooms/demo/media) is read at the window's start and end:

- the patient's page, per video it receives (the doctor's, the expert's): frames decoded
  per second, the freezes the browser counted (WebRTC's definition) and their duration,
  the share of polls whose frameWidth was at least 640 (frameWidth is the last decoded
  frame's: a stalled video keeps its width, read it with the stall), and the longest
  stall (the longest time between two polls over which framesDecoded did not advance;
  a paused video stalls);
- the patient's audio: the share of the samples received that were concealed, and the
  jitter buffer's mean delay over the window (jitterBufferDelay / EmittedCount);
- the doctor's and the expert's pages, the patient's video: the share of polls at
  1280 wide, and freezes;
- the server, toward the patient: video recovery packets (retransmissions, copies and
  FEC) per media packet sent, and its downlink control counters at the end (pauses,
  resumes, layer changes, probes, the estimate, transport-cc).

With `--compare`, the same runs go against another checkout's run.py too, the variants
alternating run by run, so both see the machine in the same state. One row per variant
and run, then the medians; `--json` writes every poll too. Needs a quiet machine: two
cores spent on three Chromiums and a server already shape the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

from loadtest.harness import machine_info

POLL_S = 0.5
PORT = 8080
PATIENT_WIDTH = 640  # what counts as a usable picture on the patient's phone
CLINICIAN_WIDTH = 1280  # the fake camera's full size
ROLES = ("patient", "doctor", "expert")
DOWNLINK_KEYS = ("pauses", "resumes", "layer_downs", "layer_ups", "probes", "probes_failed", "estimate_kbps",
                 "transport_cc")

# Every inbound stream of a page: video with the role of whose it is (from the client's
# receive slots), audio with its jitter buffer counters; and its outbound video layers
# with why the browser limits them (cpu or bandwidth: a 2-core machine running three
# Chromiums limits encoders by CPU, which no server change can help).
INBOUND_JS = r"""
const done = arguments[arguments.length - 1];
const c = window.consultClient;
const pc = c?._conn?.pc;
if (!pc) { done(null); return; }
pc.getStats().then((report) => {
  const out = {video: [], audio: [], outbound: []};
  report.forEach((s) => {
    if (s.type === 'outbound-rtp' && s.kind === 'video') {
      out.outbound.push({rid: s.rid ?? null, width: s.frameWidth ?? 0, frames: s.framesEncoded ?? 0,
                         limit: s.qualityLimitationReason ?? null});
      return;
    }
    if (s.type !== 'inbound-rtp') return;
    const slot = s.mid != null ? c.slots?.get(s.mid) : null;
    const role = slot ? (c.participants?.get(slot.participant)?.role ?? null) : null;
    if (s.kind === 'video') {
      out.video.push({mid: s.mid ?? s.trackIdentifier ?? null, role, frames: s.framesDecoded ?? 0,
                      width: s.frameWidth ?? 0, freezes: s.freezeCount ?? 0, frozen_s: s.totalFreezesDuration ?? 0});
    } else if (s.kind === 'audio') {
      out.audio.push({mid: s.mid ?? s.trackIdentifier ?? null, role, samples: s.totalSamplesReceived ?? 0,
                      concealed: s.concealedSamples ?? 0, jb_delay_s: s.jitterBufferDelay ?? 0,
                      jb_emitted: s.jitterBufferEmittedCount ?? 0});
    }
  });
  done(out);
}, () => done(null));
"""

def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_narrow_downlink",
                                     description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cap-kbit", type=int, default=1000, help="the patient's downlink, kbit/s (default 1000)")
    parser.add_argument("--queue-ms", type=int, default=300, help="the cap's queue (tbf latency), ms (default 300)")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds from loading the pages to the window's start (default 10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="the window measured, seconds (default 30)")
    parser.add_argument("--runs", type=int, default=2, help="calls per variant (default 2)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=RUN_PY",
                        help="another server to run side by side (a checkout's run.py); repeatable")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.cap_kbit <= 0 or args.queue_ms <= 0 or args.runs < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--cap-kbit, --queue-ms, --runs and --seconds must be positive, --warmup not negative")
    return args


def tc_cap(cap_kbit: int, queue_ms: int) -> tuple[str, ...]:
    return ("tbf", "rate", f"{cap_kbit}kbit", "burst", "16kb", "latency", f"{queue_ms}ms")


# --------------------------------------------------------------------------- derivation (pure)


def mid_roles(polls: list[dict[str, Any]], kind: str = "video") -> dict[str, str]:
    """mid -> role, from every poll that knew it (a mid keeps its role once seen)."""
    roles: dict[str, str] = {}
    for poll in polls:
        for s in poll.get(kind) or []:
            if s.get("role") and s["mid"] is not None:
                roles.setdefault(str(s["mid"]), s["role"])
    return roles


def video_series(polls: list[dict[str, Any]]) -> dict[str, list[Optional[dict[str, Any]]]]:
    """Per received video (keyed by whose it is, else by mid), its stats at every poll (None where absent)."""
    roles = mid_roles(polls)
    keyed: list[dict[str, dict[str, Any]]] = []
    for poll in polls:
        entry: dict[str, dict[str, Any]] = {}
        for s in poll.get("video") or []:
            mid = str(s["mid"])
            entry[roles.get(mid, f"mid {mid}")] = s
        keyed.append(entry)
    keys = sorted({k for entry in keyed for k in entry})
    return {key: [entry.get(key) for entry in keyed] for key in keys}


def longest_stall(points: list[tuple[float, Optional[int]]]) -> float:
    """The longest time between two polls over which the frame count did not advance.

    `points` are (seconds, framesDecoded or None where the stream was absent: not
    advancing, and 0 before it first appeared)."""
    longest = 0.0
    since: Optional[float] = None
    value: Optional[int] = None
    last = 0
    for t, frames in points:
        current = last if frames is None else frames
        if since is None or current != value:
            since, value = t, current
        longest = max(longest, t - since)
        last = current
    return round(longest, 2)


def share_at_least(widths: list[Optional[int]], minimum: int) -> Optional[float]:
    """The share of polls whose width was at least `minimum` (None: the stream absent, below)."""
    if not widths:
        return None
    return round(sum(1 for w in widths if w is not None and w >= minimum) / len(widths), 3)


def video_figures(times: list[float], series: list[Optional[dict[str, Any]]], width: int) -> dict[str, Any]:
    """One received video over the window. `times` and `series` run in step (one per poll)."""
    present = [s for s in series if s is not None]
    first = series[0] or {"frames": 0, "freezes": 0, "frozen_s": 0.0}
    last = present[-1] if present else first
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    frames = last["frames"] - first["frames"]
    return {
        "fps": round(frames / span, 2) if span > 0 else None,
        "frames": frames,
        "freezes": last["freezes"] - first["freezes"],
        "frozen_s": round(last["frozen_s"] - first["frozen_s"], 3),
        f"share_{width}": share_at_least([None if s is None else s["width"] for s in series], width),
        "longest_stall_s": longest_stall([(t, None if s is None else s["frames"]) for t, s in zip(times, series)]),
        "polls": len(series),
        "polls_present": len(present),
    }


def audio_figures(polls: list[dict[str, Any]]) -> dict[str, Any]:
    """The audio a page plays, over the window: counters summed over the streams in its first and last poll."""
    if len(polls) < 2:
        return {"samples": 0, "concealed_share": None, "jitter_buffer_ms": None}
    first = {str(s["mid"]): s for s in polls[0].get("audio") or []}
    last = {str(s["mid"]): s for s in polls[-1].get("audio") or []}
    zero = {"samples": 0, "concealed": 0, "jb_delay_s": 0.0, "jb_emitted": 0}
    delta = {k: sum(last[mid][k] - first.get(mid, zero)[k] for mid in last) for k in zero}
    return {
        "samples": delta["samples"],
        "concealed_share": round(delta["concealed"] / delta["samples"], 4) if delta["samples"] > 0 else None,
        "jitter_buffer_ms": round(1000 * delta["jb_delay_s"] / delta["jb_emitted"], 1) if delta["jb_emitted"] > 0
        else None,
    }


def video_packets(receiving: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(media packets, recovery packets) the server sent to a participant's video down-tracks."""
    media = recovery = 0
    for key, counters in receiving.items():
        if key.endswith(":video"):
            media += counters.get("packets", 0)
            recovery += counters.get("retransmitted", 0) + counters.get("copies", 0) + counters.get("fec_packets", 0)
    return media, recovery


def server_figures(start: Optional[dict[str, Any]], end: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Toward the patient over the window, from the admin API's entries for it at the start and the end."""
    if not start or not end:
        return {"media_packets": None, "recovery_packets": None, "recovery_share": None, "downlink": None}
    media_start, recovery_start = video_packets(start.get("receiving") or {})
    media_end, recovery_end = video_packets(end.get("receiving") or {})
    media, recovery = media_end - media_start, recovery_end - recovery_start
    downlink = end.get("downlink")
    return {"media_packets": media, "recovery_packets": recovery,
            "recovery_share": round(recovery / media, 3) if media > 0 else None,
            "downlink": None if downlink is None else {k: downlink.get(k) for k in DOWNLINK_KEYS}}


def outbound_figures(polls: list[dict[str, Any]], width: int) -> dict[str, Any]:
    """What a page sends: the share of polls in which some layer went out `width` wide, and
    the share in which the browser said a layer was limited by CPU or by bandwidth."""
    if not polls:
        return {f"share_{width}": None, "cpu_limited": None, "bandwidth_limited": None}

    def share(test: Callable[[dict[str, Any]], bool]) -> float:
        return round(sum(1 for p in polls if any(test(o) for o in p.get("outbound") or [])) / len(polls), 3)

    return {f"share_{width}": share(lambda o: o["width"] >= width),
            "cpu_limited": share(lambda o: o["limit"] == "cpu"),
            "bandwidth_limited": share(lambda o: o["limit"] == "bandwidth")}


def derive(run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one run, from its polls and the server's two snapshots."""
    out: dict[str, Any] = {}
    for role in ROLES:
        polls = run["polls"][role]
        times = [p["t"] for p in polls]
        series = video_series(polls)
        if role == "patient":
            out[role] = {"video": {key: video_figures(times, s, PATIENT_WIDTH) for key, s in series.items()},
                         "audio": audio_figures(polls), "sends": outbound_figures(polls, CLINICIAN_WIDTH)}
        else:
            own = series.get("patient")
            out[role] = {"from_patient": video_figures(times, own, CLINICIAN_WIDTH) if own else None}
    server = run.get("server") or {}
    out["server"] = server_figures(server.get("start"), server.get("end"))
    # the clinicians' downlink control: a layer down or a probe failing there is the server's doing
    out["clinicians_downlink"] = {role: ((server.get("end") or {}).get("others") or {}).get(role)
                                  for role in ("doctor", "expert")}
    return out


# --------------------------------------------------------------------------- table


def _downlink(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda f: (f["server"]["downlink"] or {}).get(key)


def _patient_video(key: str, figure: str) -> Callable[[dict[str, Any]], Any]:
    return lambda f: (f["patient"]["video"].get(key) or {}).get(figure)


def _clinician(role: str, figure: str) -> Callable[[dict[str, Any]], Any]:
    return lambda f: (f[role]["from_patient"] or {}).get(figure)


Column = tuple[str, Callable[[dict[str, Any]], Any], str]  # header, figure getter, format

# Two tables, one row per variant and run in each.
COLUMN_GROUPS: list[tuple[str, list[Column]]] = [
    ("the patient's page: the doctor's and the expert's video, and the audio", [
        *((f"{who[:3]} fps", _patient_video(who, "fps"), "{:.1f}") for who in ("doctor", "expert")),
        *((f"{who[:3]} stall s", _patient_video(who, "longest_stall_s"), "{:.1f}") for who in ("doctor", "expert")),
        *((f"{who[:3]} >=640", _patient_video(who, f"share_{PATIENT_WIDTH}"), "{:.0%}")
          for who in ("doctor", "expert")),
        *((f"{who[:3]} freezes", _patient_video(who, "freezes"), "{}") for who in ("doctor", "expert")),
        ("concealed", lambda f: f["patient"]["audio"]["concealed_share"], "{:.1%}"),
        ("jitter ms", lambda f: f["patient"]["audio"]["jitter_buffer_ms"], "{:.0f}"),
    ]),
    ("the patient's video on the doctor's and the expert's page; the server toward the patient", [
        *((f"on {who[:3]} >=1280", _clinician(who, f"share_{CLINICIAN_WIDTH}"), "{:.0%}")
          for who in ("doctor", "expert")),
        *((f"on {who[:3]} freezes", _clinician(who, "freezes"), "{}") for who in ("doctor", "expert")),
        ("pat sends 1280", lambda f: f["patient"]["sends"][f"share_{CLINICIAN_WIDTH}"], "{:.0%}"),
        ("cpu-limited", lambda f: f["patient"]["sends"]["cpu_limited"], "{:.0%}"),
        ("recovery", lambda f: f["server"]["recovery_share"], "{:.0%}"),
        ("pauses", _downlink("pauses"), "{}"),
        ("resumes", _downlink("resumes"), "{}"),
        ("downs", _downlink("layer_downs"), "{}"),
        ("ups", _downlink("layer_ups"), "{}"),
        ("probes", _downlink("probes"), "{}"),
        ("failed", _downlink("probes_failed"), "{}"),
        ("est kbps", _downlink("estimate_kbps"), "{}"),
    ]),
]
COLUMNS: list[Column] = [column for _, columns in COLUMN_GROUPS for column in columns]


def row_values(figures: dict[str, Any]) -> list[Any]:
    return [get(figures) for _, get, _ in COLUMNS]


def medians(rows: list[list[Any]]) -> list[Any]:
    """Per column, the median over the runs that have a number there (None where none has)."""
    out: list[Any] = []
    for column in zip(*rows):
        numbers = [v for v in column if isinstance(v, (int, float)) and not isinstance(v, bool)]
        out.append(statistics.median(numbers) if numbers else None)
    return out


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if fmt == "{}" and isinstance(value, float):
        return f"{value:g}"
    return fmt.format(value)


def _table(title: str, columns: list[Column], rows: list[tuple[str, str, Optional[list[Any]], str]]) -> None:
    """`rows`: (variant, run, the values of these columns or None, why none)."""
    widths = [max(len(header), 5) for header, _, _ in columns]
    print(f"\n{title}")
    print(f"{'variant':12} {'run':>6}  " + "  ".join(f"{h:>{w}}" for (h, _, _), w in zip(columns, widths)))
    for label, run, values, why in rows:
        if values is None:
            print(f"{label:12} {run:>6}  {why}")
            continue
        cells = [_cell(v, fmt) for v, (_, _, fmt) in zip(values, columns)]
        print(f"{label:12} {run:>6}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


def print_report(results: dict[str, Any]) -> None:
    rows: list[tuple[str, str, Optional[list[Any]], str]] = []
    for label, result in results.items():
        for n, run in enumerate(result["runs"], 1):
            failed = f"failed: {run['error'][:100]}" if "error" in run else ""
            rows.append((label, str(n), None if failed else row_values(run["figures"]), failed))
    rows += [(label, "median", [result["median"][header] for header, _, _ in COLUMNS], "")
             for label, result in results.items() if result["median"] is not None]
    offset = 0
    for title, columns in COLUMN_GROUPS:
        end = offset + len(columns)
        _table(title, columns, [(label, run, None if values is None else values[offset:end], why)
                                for label, run, values, why in rows])
        offset = end
    print("\nfps: frames decoded per second; stall s: the longest time the frame count stood still; >=640, >=1280:\n"
          "share of polls at that decoded width; freezes: counted by the browser; concealed: share of the audio\n"
          "samples concealed; jitter ms: mean jitter buffer delay; recovery: recovery packets per video media\n"
          "packet sent the patient; pauses .. est kbps: the server's downlink control toward the patient at the end;\n"
          "pat sends 1280, cpu-limited: share of polls in which the patient's page sent a 1280-wide layer, and in\n"
          "which its browser limited a layer for CPU.\n"
          "'-': no such stream or figure.")


# --------------------------------------------------------------------------- the call


def media_snapshot(server: Any, ids: dict[str, str]) -> Optional[dict[str, Any]]:
    """The admin API's entry for the patient: its downlink control and what it is sent."""
    if "patient" not in ids:
        return None
    participants = server.admin_get("/api/rooms/demo/media")["participants"]
    entry = participants.get(ids["patient"])
    if entry is None:
        return None
    others = {role: {k: (participants.get(pid) or {}).get("downlink", {}).get(k) for k in DOWNLINK_KEYS}
              for role, pid in ids.items() if role != "patient"}
    return {"downlink": entry.get("downlink"), "receiving": entry.get("receiving"), "others": others}


def watch_call(run_py: Optional[Path], workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from selenium.common.exceptions import WebDriverException

    from tests.browser.harness import (
        LARGE_SCREEN,
        BrowserFactory,
        NetNamespace,
        link_namespaces,
        start_sfu_server,
        start_tcp_forwarder,
    )

    netns = NetNamespace(log_dir=workdir / "logs")
    patient_ns = None
    clinicians = patient_browsers = None
    try:
        patient_ns = NetNamespace(log_dir=workdir / "patient-logs")
        server = start_sfu_server(netns, workdir / "data", run_py=run_py,
                                  extra_args=["--host", "0.0.0.0", "--public-url", f"http://127.0.0.1:{PORT}"])
        link = link_namespaces(netns, patient_ns)
        start_tcp_forwarder(patient_ns, PORT, link.a_address, PORT)
        netns.run(["tc", "qdisc", "add", "dev", link.a_veth, "root", *tc_cap(args.cap_kbit, args.queue_ms)],
                  check=True)
        patient_browsers = BrowserFactory(patient_ns, artifact_dir=workdir / "patient")
        clinicians = BrowserFactory(netns, artifact_dir=workdir / "pages")
        pages = {"patient": patient_browsers("patient"), "doctor": clinicians("doctor"),
                 "expert": clinicians("expert")}
        for role in ("doctor", "expert"):
            pages[role].set_window_size(*LARGE_SCREEN)  # the patient's picture past 640 wide: its top layer wanted
        started = time.monotonic()
        pages["doctor"].get(server.doctor_url)
        pages["expert"].get(server.expert_url)
        pages["patient"].get(server.patient_url)
        time.sleep(max(0.0, args.warmup - (time.monotonic() - started)))

        ids = {p["role"]: p["id"] for p in server.admin_get("/api/rooms/demo/participants")["participants"]}
        server_start = media_snapshot(server, ids)
        polls: dict[str, list[dict[str, Any]]] = {role: [] for role in pages}
        failed = dict.fromkeys(pages, 0)
        window_start = time.monotonic()
        tick = window_start
        while tick <= window_start + args.seconds:
            time.sleep(max(0.0, tick - time.monotonic()))
            for role, driver in pages.items():
                try:
                    stats = driver.execute_async_script(INBOUND_JS)
                except WebDriverException:  # a page busy or reloading: the next read will do
                    stats = None
                if not stats:
                    failed[role] += 1
                    continue
                polls[role].append({"t": round(time.monotonic() - started, 3), **stats})
            tick += POLL_S
            while tick < time.monotonic():  # reads slower than the poll period: skip the missed ticks
                tick += POLL_S
        server_end = media_snapshot(server, ids)
        return {"ids": ids, "window_s": [round(window_start - started, 2), round(time.monotonic() - started, 2)],
                "failed_reads": failed, "polls": polls, "server": {"start": server_start, "end": server_end}}
    finally:
        for browsers in (patient_browsers, clinicians):
            if browsers is not None:
                browsers.close()
        if patient_ns is not None:
            patient_ns.destroy()
        netns.destroy()


def summarise(runs: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """Per table column (by its header), the median over the runs that completed."""
    rows = [row_values(run["figures"]) for run in runs if "figures" in run]
    return dict(zip((header for header, _, _ in COLUMNS), medians(rows))) if rows else None


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from tests.browser.harness import missing_prerequisites

    variants: dict[str, Optional[Path]] = {"this": None}
    for item in args.compare:
        label, _, path = item.partition("=")
        if not label or not path or not Path(path).is_file() or label in variants:
            print(f"--compare wants LABEL=RUN_PY with a new label and an existing run.py, not {item!r}",
                  file=sys.stderr)
            return 2
        variants[label] = Path(path).resolve()
    reason = missing_prerequisites()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="bench-narrow-downlink-") as tmp:
        for n in range(args.runs):
            for label, run_py in variants.items():
                try:
                    run = watch_call(run_py, Path(tmp) / f"{label}-{n}", args)
                    run["figures"] = derive(run)
                except Exception as exc:  # one failed call should not cost the others
                    print(f"{label} run {n + 1} failed: {exc!r}"[:4000], file=sys.stderr)
                    run = {"error": repr(exc)}
                runs[label].append(run)
    results = {label: {"run_py": str(run_py or "run.py"), "runs": runs[label], "median": summarise(runs[label])}
               for label, run_py in variants.items()}
    print(f"patient's downlink capped at {args.cap_kbit} kbit/s, {args.queue_ms} ms queue; "
          f"window {args.seconds:g} s after {args.warmup:g} s")
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "machine": machine_info(), "cap_kbit": args.cap_kbit,
                                         "queue_ms": args.queue_ms, "warmup_s": args.warmup,
                                         "seconds": args.seconds, "results": results}, indent=2))
        print(f"\nwritten: {args.json}")
    return 1 if any("error" in run for label_runs in runs.values() for run in label_runs) else 0


if __name__ == "__main__":
    sys.exit(main())
