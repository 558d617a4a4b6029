"""Tracing short, degraded leaks: blind decoding against matching the issued ids.

    .venv/bin/python -m loadtest.bench_watermark_matching [--ids 5] [--issued 1000] [--markdown]

Each of `--ids` viewers' exports (640x360, 12 fps, the real marks and VP8 export encode) is
leaked as its first N frames re-encoded with H.264 at a low bit rate. Each leak is traced
both ways: blind (watermark/detect.py: Viterbi + CRC) and by matching against a registry of
`--issued` ids that includes the viewer's (watermark/match.py). The null side: unmarked
clips of every kind, and the marked clips under other keys, matched against the same
registry: any accepted match there is a false identification.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Optional

import numpy as np

from loadtest.synthetic_video import CLEAN_KINDS, clean_clip, decode, encode
from loadtest.watermark_leak import detect_file, export_clip
from watermark.match import accepted, match_issued
from watermark.pattern import Pattern

W, H, FPS = 640, 360, 12
FRAMES = (6, 12, 18, 24, 48)
BITRATES = (500_000, 250_000, 150_000)


def _identify(pattern: Pattern, clip: bytes, issued: Iterable[int]) -> tuple[Optional[int], Optional[int], float]:
    """(blind id or None, matched id or None, match z)."""
    det = detect_file(pattern, clip)
    found = match_issued(det.soft, pattern.layout.scramble, list(issued))
    return det.wm_id, (found.wm_id if found is not None and accepted(found) else None), found.z if found else 0.0


def run(n_ids: int, n_issued: int, other_keys: int = 3) -> dict:
    key = bytes(range(32))
    pattern = Pattern(key)
    rng = np.random.default_rng(17)
    issued = [int(x) for x in rng.integers(1, 2 ** 32, n_issued)]
    viewers = issued[:n_ids]
    cells: dict[tuple[int, int], dict] = {}
    exports = []
    for wm_id in viewers:
        frames = list(decode(export_clip(key, wm_id, W, H, max(FRAMES) / FPS, FPS).data))
        exports.append(frames)
        for n in FRAMES:
            for bitrate in BITRATES:
                blind, matched, z = _identify(pattern, encode(frames[:n], "h264", bitrate, FPS), issued)
                cell = cells.setdefault((n, bitrate), {"blind": 0, "matched": 0, "wrong": 0, "z": []})
                cell["blind"] += blind == wm_id
                cell["matched"] += matched == wm_id
                cell["wrong"] += (blind is not None and blind != wm_id) + (matched is not None and matched != wm_id)
                cell["z"].append(round(z, 2))
    null: list[tuple[Optional[int], float]] = []   # (matched id, z) where no issued mark is readable
    for kind in CLEAN_KINDS:
        null.append(_identify(pattern, encode(clean_clip(kind, W, H, 48, 11, FPS), "h264", BITRATES[0], FPS),
                              issued)[1:])
    for _ in range(other_keys):
        other = Pattern(bytes(rng.integers(0, 256, 32, dtype=np.uint8)))
        null += [_identify(other, encode(frames, "h264", BITRATES[0], FPS), issued)[1:] for frames in exports]
    return {"ids": n_ids, "issued": n_issued, "fps": FPS, "size": f"{W}x{H}",
            "cells": [{"frames": n, "bitrate": b, **c} for (n, b), c in sorted(cells.items())],
            "null": {"trials": len(null), "false_identifications": sum(m is not None for m, _ in null),
                     "max_z": max(z for _, z in null)}}


def markdown(r: dict) -> str:
    lines = [f"| leak (H.264) | blind decode | matched ({r['issued']} issued) | wrong | match z (min) |",
             "|---|---:|---:|---:|---:|"]
    for c in r["cells"]:
        lines.append(f"| {c['frames'] / r['fps']:.1f} s at {c['bitrate'] // 1000} kbit/s | {c['blind']}/{r['ids']} "
                     f"| {c['matched']}/{r['ids']} | {c['wrong']} | {min(c['z']):.1f} |")
    n = r["null"]
    lines.append(f"\nNull trials (unmarked clips, marked clips under other keys): {n['false_identifications']} "
                 f"false identifications in {n['trials']}, best z {n['max_z']:.1f}.")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", type=int, default=5, help="viewers whose leaks are traced")
    parser.add_argument("--issued", type=int, default=1000, help="ids in the registry matched against")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.ids, args.issued)
    print(markdown(result) if args.markdown else json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
