"""Cost of burning a typical board into a 1280x720 frame (not a test; run it):

    .venv/bin/python -m tests.annotate.bench_render [--save board.png]

A typical board: 12 freehand strokes of 120 points, 4 circles, 4 arrows and 4 labels,
half of them face-anchored, on a face detected by MediaPipe in the sample portrait.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import cv2
import numpy as np

from annotate.anchoring import anchor_points
from annotate.board import AnnotationBoard
from annotate.limits import AuthorRateLimiter
from annotate.model import PALETTE
from annotate.render import render
from tests.annotate.conftest import FRAME_H, FRAME_W, Pose, detect_face_px, load_portrait


def typical_board(landmarks: np.ndarray) -> list[dict]:
    rng = np.random.default_rng(7)
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    items = list(PALETTE)
    face_centre = landmarks[:468, :2].mean(axis=0)
    face_half = np.ptp(landmarks[:468, :2], axis=0) / 2

    def place(points: np.ndarray, on_face: bool) -> dict:
        if on_face:
            return {"anchor": "face", "points": anchor_points(points, landmarks)}
        return {"anchor": "screen", "points": np.clip(points, 0, 1).tolist()}

    for i in range(24):
        on_face = (i // 6) % 2 == 0
        start = face_centre + rng.uniform(-0.4, 0.4, 2) * face_half if on_face else rng.uniform(0.05, 0.9, 2)
        style = {"item": items[i % len(items)], "width": float(rng.integers(2, 8))}
        kind = ("freehand", "freehand", "freehand", "circle", "arrow", "text")[i % 6]
        if kind == "freehand":
            t = np.linspace(0, 2 * math.pi, 120)
            points = place(start + 0.025 * np.stack([np.cos(t) * (1 + t / 7), np.sin(2 * t) / 2], axis=1), on_face)
            shape = {"kind": "freehand", **points, **style}
        else:
            points = place(np.array([start, start + (0.025, 0.02)]), on_face)
            first, second = points["points"]
            fields = {"circle": {"center": first, "edge": second}, "arrow": {"from": second, "to": first},
                      "text": {"at": first, "text": f"Filler {i} ml, zone {i % 3}"}}[kind]
            shape = {"kind": kind, "anchor": points["anchor"], **fields, **style}
            if kind == "text":
                del shape["width"]
        board.apply("doctor", {"op": "add", "shape": shape})
    return board.snapshot()["shapes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--save", help="write one rendered frame here (PNG) to look at")
    args = parser.parse_args()

    # the portrait scaled to the frame's height and centred, its landmarks moved alike
    portrait = load_portrait()
    scale = FRAME_H / portrait.shape[0]
    width = round(portrait.shape[1] * scale)
    left = (FRAME_W - width) // 2
    background = np.zeros((FRAME_H, FRAME_W, 3), np.uint8)
    background[:, left:left + width] = cv2.resize(portrait, (width, FRAME_H))
    face_px = detect_face_px(portrait)
    landmarks = Pose(face_px, scale=scale, centre=face_px[:468, :2].mean(axis=0) * scale + (left, 0)).landmarks()
    shapes = typical_board(landmarks)

    frame = background.copy()
    start = time.perf_counter()
    render(frame, shapes, landmarks)
    first_ms = (time.perf_counter() - start) * 1000
    if args.save:
        cv2.imwrite(args.save, frame)
    times = []
    for _ in range(args.frames):
        frame = background.copy()
        start = time.perf_counter()
        render(frame, shapes, landmarks)
        times.append((time.perf_counter() - start) * 1000)
    points = sum(len(s["points"]) if s["kind"] == "freehand" else 2 for s in shapes)
    print(f"{len(shapes)} shapes, {points} points, 1280x720: first frame {first_ms:.2f} ms (labels rasterised), "
          f"then median {statistics.median(times):.2f} ms, p95 {sorted(times)[int(0.95 * len(times))]:.2f} ms "
          f"over {args.frames} frames")


if __name__ == "__main__":
    main()
