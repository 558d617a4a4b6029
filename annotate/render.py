"""Burns a board's shapes into a BGR frame (replay and export), following the drawing
spec below, which the browser pages follow too so a mark looks the same live as in an
export.

Drawing spec
------------
Frame W × H pixels; scale s = H / 720 (sizes are "reference pixels" of a 720-pixel-high
frame, so a mark keeps its size relative to the picture on any resolution). On a page,
W × H is the video picture as displayed, in device pixels, without letterbox bars.

- Position: normalised (x, y) is (x·W, y·H) from the frame's top-left corner, in
  canvas coordinates (pixel i spans i..i+1). Face-anchored points are first resolved
  against the frame's landmarks (anchoring.py); in a frame without a face they are not
  drawn.
- Colour: the shape's `color`, opaque.
- Stroke: `width` w is w·s px wide (this renderer: within about a pixel, as OpenCV's
  anti-aliased strokes come in 2-pixel steps); round caps and joins.
- freehand: a polyline through its points; a single point is a dot of diameter w·s.
- circle: centre c and rim point e: an outline of radius |e − c| measured in pixels.
- arrow: a filled head with its tip at `to`, of length L = min((10 + 3·w)·s, |to − from| / 2)
  and half-angle 25° (base corners at to − L·d ± L·tan 25°·n, d the unit direction, n its
  normal); the shaft is a stroke from `from` to the middle of the head's base.
- text: font DejaVu Sans (it ships with matplotlib; pages load it as a web font or fall
  back to sans-serif), each character it lacks (Chinese, Japanese, Korean) from a CJK font
  (here WenQuanYi Micro Hei, media/fonts.py; on a page the browser's own fallback), at
  F = 20·s px, in the shape's colour, on a box of black at 60 % opacity. The box's
  top-left corner is at `at`; padding p = 0.3·F; width = text width
  (measureText on a page, the glyphs' extent here: a pixel or two apart) + 2p; height =
  1.2·F + 2p; baseline at the box top + p + 0.93·F. A box that would
  leave the frame is moved inside it; text wider than the frame is cut at the right.
- Shapes are drawn in board order (later on top).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import cv2
import numpy as np

from annotate.anchoring import resolve_points
from annotate.model import shape_points
from media.fonts import label_font

REF_HEIGHT = 720
FONT_REF_PX = 20.0
TEXT_PAD = 0.3           # × font size
TEXT_BOX_HEIGHT = 1.2    # × font size, plus the padding
TEXT_BASELINE = 0.93     # × font size below the padding: DejaVu Sans' ascender
TEXT_BOX_OPACITY = 0.6
ARROW_HEAD_REF = 10.0    # head length = (ARROW_HEAD_REF + ARROW_HEAD_PER_WIDTH · w) · s
ARROW_HEAD_PER_WIDTH = 3.0
ARROW_HALF_ANGLE_DEG = 25.0

_SHIFT = 4               # OpenCV fixed-point bits: sub-pixel positions for anti-aliasing
_ONE = 1 << _SHIFT


@lru_cache(maxsize=256)
def _text_bitmap(text: str, size_px: float) -> tuple[np.ndarray, int]:
    """(coverage 0..255, baseline row as a pixel-edge offset from the bitmap's top);
    cached because a replay draws the same labels on every frame."""
    coverage, baseline = label_font().render(text, size_px)
    coverage.setflags(write=False)
    return coverage, baseline


@lru_cache(maxsize=64)
def _bgr(color: str) -> tuple[int, int, int]:
    return int(color[5:7], 16), int(color[3:5], 16), int(color[1:3], 16)


def _pixels(shape: dict, landmarks: np.ndarray | None, width: int, height: int) -> np.ndarray | None:
    """The shape's points in canvas pixel coordinates, or None (face-anchored, no face)."""
    points = shape_points(shape)
    if shape["anchor"] == "face":
        if landmarks is None:
            return None
        normalised = resolve_points(points, landmarks)
    else:
        normalised = np.asarray(points, dtype=np.float64)
    return normalised * (width, height)


def _fixed(px: np.ndarray) -> np.ndarray:
    # OpenCV puts pixel i's centre at i, a canvas at i + 0.5
    return np.round((px - 0.5) * _ONE).astype(np.int32)


def _thickness(width_px: float) -> int:
    """The OpenCV thickness whose anti-aliased stroke is nearest `width_px` wide: OpenCV
    draws an even thickness t t + 1.4..1.7 px wide (by sub-pixel position) and odd ones
    (but 1) like the next even one, so the result is within about a pixel of the spec."""
    if width_px < 2.45:  # between thickness 1 (1.3..1.4 px) and 2 (3.4..3.7 px)
        return 1
    return max(2, 2 * round((width_px - 1.55) / 2))


def _point(px: np.ndarray) -> tuple[int, int]:
    x, y = _fixed(px)
    return int(x), int(y)


def _blend(frame: np.ndarray, coverage: np.ndarray, x: int, y: int, bgr: tuple[int, int, int]) -> None:
    """Paints `bgr` through `coverage` with its top-left at (x, y), clipped to the frame
    (explicitly: a negative slice start would wrap around)."""
    h, w = coverage.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, frame.shape[1]), min(y + h, frame.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    alpha = coverage[y0 - y:y1 - y, x0 - x:x1 - x, None].astype(np.float32) / 255.0
    roi = frame[y0:y1, x0:x1]
    roi[:] = roi + alpha * (np.array(bgr, np.float32) - roi)


def _draw_text(frame: np.ndarray, shape: dict, at: np.ndarray, scale: float) -> None:
    height, width = frame.shape[:2]
    size = FONT_REF_PX * scale
    pad = round(TEXT_PAD * size)
    coverage, baseline = _text_bitmap(shape["text"], size)
    box_w = coverage.shape[1] + 2 * pad
    box_h = round(TEXT_BOX_HEIGHT * size) + 2 * pad
    x = max(0, min(round(at[0]), width - box_w))
    y = max(0, min(round(at[1]), height - box_h))
    box = frame[y:y + box_h, x:x + box_w]
    np.multiply(box, 1.0 - TEXT_BOX_OPACITY, out=box, casting="unsafe")
    _blend(frame, coverage, x + pad, y + pad + round(TEXT_BASELINE * size) - baseline, _bgr(shape["color"]))


def _draw_arrow(frame: np.ndarray, px: np.ndarray, bgr: tuple[int, int, int], w: float, scale: float,
                thickness: int) -> None:
    tail, tip = px
    length = float(np.hypot(*(tip - tail)))
    if length == 0.0:
        return
    direction = (tip - tail) / length
    normal = np.array([-direction[1], direction[0]])
    head = min((ARROW_HEAD_REF + ARROW_HEAD_PER_WIDTH * w) * scale, length / 2)
    base = tip - head * direction
    half = head * math.tan(math.radians(ARROW_HALF_ANGLE_DEG))
    cv2.line(frame, _point(tail), _point(base), bgr, thickness, cv2.LINE_AA, _SHIFT)
    cv2.fillPoly(frame, [_fixed(np.array([tip, base + half * normal, base - half * normal]))], bgr, cv2.LINE_AA, _SHIFT)


def render(frame: np.ndarray, shapes: Iterable[dict], landmarks: np.ndarray | None = None) -> np.ndarray:
    """Draws `shapes` (a snapshot's "shapes") into `frame` in place and returns it.
    `landmarks`: the frame's face landmarks, normalised, (N, 2) or (N, 3); None when no
    face was found, and then face-anchored shapes are skipped."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 frame (H, W, 3), got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    scale = height / REF_HEIGHT
    for shape in shapes:
        px = _pixels(shape, landmarks, width, height)
        if px is None:
            continue
        bgr = _bgr(shape["color"])
        kind = shape["kind"]
        if kind == "text":
            _draw_text(frame, shape, px[0], scale)
            continue
        w = shape["width"]
        thickness = _thickness(w * scale)
        if kind == "freehand" and len(px) == 1:
            cv2.circle(frame, _point(px[0]), round(w * scale * _ONE / 2), bgr, cv2.FILLED, cv2.LINE_AA, _SHIFT)
        elif kind == "freehand":
            cv2.polylines(frame, [_fixed(px)], False, bgr, thickness, cv2.LINE_AA, _SHIFT)
        elif kind == "circle":
            radius = float(np.hypot(*(px[1] - px[0])))
            cv2.circle(frame, _point(px[0]), round(radius * _ONE), bgr, thickness, cv2.LINE_AA, _SHIFT)
        else:
            _draw_arrow(frame, px, bgr, w, scale, thickness)
    return frame
