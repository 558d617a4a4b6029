"""How a clean call starts in real Chromium: how soon each side sees the other, and at what size.

    python -m loadtest.bench_call_start --runs 3 --json /tmp/bench-call-start.json
    python -m loadtest.bench_call_start --compare before=/path/to/other/checkout/run.py

A patient page and a doctor console join one room in headless Chromium (the harness of
tests/browser: a private network namespace, root, chromium, chromedriver, iproute2; the
fake camera is 1280x720 and the pages publish simulcast). Each page's inbound video is
read from getStats every 0.2 s for `--seconds`: when its first frame was decoded, when
its decoded width first reached 640 and 1280 (the layers the server forwards), and the
freezes the browser counted (WebRTC's definition). Times are seconds from loading the
pages. With `--compare`, the same runs go against another checkout's run.py too, the
variants alternating run by run, so both see the machine in the same state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from loadtest.harness import machine_info

POLL_S = 0.2
WIDTHS = (640, 1280)

INBOUND_JS = r"""
const done = arguments[arguments.length - 1];
const c = window.consultClient;
if (!c || !c._conn) { done(null); return; }
c._conn.pc.getStats().then((stats) => {
  let out = null;
  stats.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video' && (s.framesDecoded ?? 0) > 0 && !out) {
      out = {width: s.frameWidth ?? 0, frames: s.framesDecoded, freezes: s.freezeCount ?? 0,
             frozen_s: s.totalFreezesDuration ?? 0};
    }
  });
  done(out);
}, () => done(null));
"""


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_call_start", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="calls per variant (default 3)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each call is watched (default 30)")
    parser.add_argument("--compare", action="append", default=[], metavar="LABEL=RUN_PY",
                        help="another server to run side by side (a checkout's run.py); repeatable")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def watch_call(run_py: Optional[Path], workdir: Path, seconds: float) -> dict[str, Any]:
    from selenium.common.exceptions import WebDriverException

    from tests.browser.harness import LARGE_SCREEN, BrowserFactory, NetNamespace, start_sfu_server

    ns = NetNamespace(log_dir=workdir / "logs")
    chromium = None
    try:
        server = start_sfu_server(ns, workdir / "data", run_py=run_py)
        chromium = BrowserFactory(ns, artifact_dir=workdir / "pages")
        pages = {"patient": chromium("patient"), "doctor": chromium("doctor")}
        for page in pages.values():
            page.set_window_size(*LARGE_SCREEN)  # each draws the other past 640 wide: the top layer is wanted
        started = time.monotonic()
        pages["patient"].get(server.patient_url)
        pages["doctor"].get(server.doctor_url)
        seen: dict[str, dict[str, Any]] = {role: {"first_frame_s": None, **{f"width_{w}_s": None for w in WIDTHS},
                                                  "freezes": 0, "frozen_s": 0.0, "failed_reads": 0}
                                           for role in pages}
        while (now := time.monotonic() - started) < seconds:
            for role, driver in pages.items():
                entry = seen[role]
                try:
                    stats = driver.execute_async_script(INBOUND_JS)
                except WebDriverException:  # a page busy or reloading: the next read will do
                    entry["failed_reads"] += 1
                    continue
                if not stats:
                    continue
                if entry["first_frame_s"] is None:
                    entry["first_frame_s"] = round(now, 2)
                for width in WIDTHS:
                    if entry[f"width_{width}_s"] is None and stats["width"] >= width:
                        entry[f"width_{width}_s"] = round(now, 2)
                entry["freezes"], entry["frozen_s"] = stats["freezes"], round(stats["frozen_s"], 3)
            time.sleep(POLL_S)
        return seen
    finally:
        if chromium is not None:
            chromium.close()
        ns.destroy()


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per page: the median of each time over the runs (None where a run never got there)."""
    out: dict[str, Any] = {}
    for role in ("doctor", "patient"):
        entries = [run[role] for run in runs]
        summary: dict[str, Any] = {}
        for key in ("first_frame_s", *(f"width_{w}_s" for w in WIDTHS)):
            values = [e[key] for e in entries]
            reached = [v for v in values if v is not None]
            summary[key] = {"median": statistics.median(reached) if reached else None, "runs": values}
        summary["freezes"] = [e["freezes"] for e in entries]
        out[role] = summary
    return out


def print_report(results: dict[str, Any]) -> None:
    print("page     variant          first frame  640 from     1280 from    freezes (per run)")
    for label, result in results.items():
        for role, s in result["summary"].items():
            def cell(key: str) -> str:
                values = s[key]["runs"]
                return "/".join("-" if v is None else f"{v:.1f}" for v in values)
            print(f"{role:8} {label:16} {cell('first_frame_s'):12} {cell('width_640_s'):12} "
                  f"{cell('width_1280_s'):12} {'/'.join(map(str, s['freezes']))}")
    print("seconds from loading the pages; '-': not reached in the window")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    from tests.browser.harness import missing_prerequisites

    reason = missing_prerequisites()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    variants: dict[str, Optional[Path]] = {"this": None}
    for item in args.compare:
        label, _, path = item.partition("=")
        if not label or not path or not Path(path).is_file():
            print(f"--compare wants LABEL=RUN_PY with an existing run.py, not {item!r}", file=sys.stderr)
            return 2
        variants[label] = Path(path).resolve()
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    with tempfile.TemporaryDirectory(prefix="bench-call-start-") as tmp:
        for n in range(args.runs):
            for label, run_py in variants.items():
                runs[label].append(watch_call(run_py, Path(tmp) / f"{label}-{n}", args.seconds))
    results = {label: {"run_py": str(run_py or "run.py"), "runs": runs[label], "summary": summarise(runs[label])}
               for label, run_py in variants.items()}
    print_report(results)
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "machine": machine_info(), "results": results}, indent=2))
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
