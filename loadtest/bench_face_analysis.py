"""Cost of face analysis per frame: VIDEO-mode landmarks + all metrics.

    .venv/bin/python -m loadtest.bench_face_analysis [--frames 300] [--streams 1] [--size 640x480]

Frames: matplotlib's Grace Hopper portrait on a canvas of --size, drifting and tilting
a little every frame so the tracker works as it would on a live patient
(loadtest.synthetic_video.portrait_frames). Each stream is one worker thread with its
own detector (as in production); frames are prepared before timing, so the figures are
analysis only (no decoding or resizing).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np

from loadtest.synthetic_video import PORTRAIT_FRAME_INTERVAL_MS, portrait_frames
from media.processors.analysis import analyze_frame
from media.processors.face_landmarks import FaceLandmarkDetector


def run_stream(frames: list[np.ndarray], n: int, warmup: int, out: dict[str, list[float]]) -> None:
    """Analyse `warmup` + `n` frames on a new detector; per-frame wall times (ms) into `out`."""
    detect_ms, metrics_ms, found = [], [], 0
    with FaceLandmarkDetector() as detector:
        for i in range(warmup + n):
            bgr = frames[i % len(frames)]
            t0 = time.perf_counter()
            landmarks = detector.detect(bgr, timestamp_ms=i * PORTRAIT_FRAME_INTERVAL_MS)
            t1 = time.perf_counter()
            analyze_frame(bgr, landmarks)
            t2 = time.perf_counter()
            if i >= warmup:
                detect_ms.append((t1 - t0) * 1000)
                metrics_ms.append((t2 - t1) * 1000)
                found += landmarks is not None
    out["detect"], out["metrics"], out["found"] = detect_ms, metrics_ms, [found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300, help="timed frames per stream")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--streams", type=int, default=1, help="concurrent streams, one worker thread each")
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    frames = portrait_frames(width, height)

    results: list[dict[str, list[float]]] = [{} for _ in range(args.streams)]
    threads = [threading.Thread(target=run_stream, args=(frames, args.frames, args.warmup, r)) for r in results]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0  # includes warm-up

    total = [d + m for r in results for d, m in zip(r["detect"], r["metrics"])]
    detect = [d for r in results for d in r["detect"]]
    metrics = [m for r in results for m in r["metrics"]]
    frames_done = args.streams * (args.frames + args.warmup)
    q = lambda xs, p: float(np.percentile(xs, p))  # noqa: E731
    print(f"{args.streams} stream(s), {width}x{height}, {args.frames} timed frames each after {args.warmup} warm-up")
    print(f"face found in {sum(r['found'][0] for r in results)}/{args.streams * args.frames} frames")
    print(f"landmarks: mean {statistics.fmean(detect):.2f} ms, p50 {q(detect, 50):.2f}, p95 {q(detect, 95):.2f}")
    print(f"metrics:   mean {statistics.fmean(metrics):.2f} ms, p50 {q(metrics, 50):.2f}, p95 {q(metrics, 95):.2f}")
    print(f"total:     mean {statistics.fmean(total):.2f} ms, p50 {q(total, 50):.2f}, p95 {q(total, 95):.2f}")
    print(f"throughput: {frames_done / wall:.1f} frames/s in all ({frames_done / wall / args.streams:.1f} per stream), "
          f"CPU {cpu / frames_done * 1000:.2f} ms/frame = {cpu / wall:.2f} cores busy")


if __name__ == "__main__":
    main()
