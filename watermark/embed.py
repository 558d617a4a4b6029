"""Embedding: the invisible forensic mark (texture-masked) and the visible viewer mark.

`Watermarker(key, wm_id, label)` is what an export or a watermarked replay/live view
uses: `frame_hook(image_bgr, ms) -> image_bgr` draws the visible mark, then adds the
invisible one (in that order, so the visible text is itself marked too).

Invisible mark. The key's periodic tile (watermark/pattern.py) is resampled once per frame
size to the frame's period (exact band-limited interpolation from a 4x oversampled
tile) and cached; per frame only a texture mask is computed: local luma contrast on a
quarter-size copy, compressed (square root) and clamped to [MASK_MIN, MASK_MAX] times
its mean, so flat areas (e.g. smooth skin) get about half the average strength and
textured areas up to twice. The global strength is then set per frame so that the
change has an RMS of `rms` luma levels: PSNR = 20 log10(255 / rms) ~ 42 dB at the
default 2.0 (>= 40 dB is the requirement; rounding and clipping only lower the error).
The same delta is added to B, G and R, i.e. to luma only (chroma unchanged).

Visible mark. The viewer's label (name / id and UTC time) in DejaVu Sans, characters it
lacks (a Chinese name) in a CJK font (media/fonts.py), white with a dark outline at
VISIBLE_OPACITY, drifting slowly along a closed Lissajous path over the whole frame (one
lap in ~VISIBLE_PERIOD_S), so no fixed crop removes it and it never stays over the same
part of the lesion.

Live video (media/watermark_variant.py) is marked in the decoder's own I420 planes
(`Watermarker.mark_i420`), not in BGR: the same marks at a third of the cost, with no
colour conversion either way. The forensic delta goes onto Y scaled by 219/255
(limited-range luma: a change of d in Y' reads as ~d/0.86 in decoded RGB, so the
strength measured on the decoded picture is the same as for an export); the visible
label is blended into Y and, at half resolution, towards neutral chroma.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Optional

import cv2
import numpy as np

from media.fonts import label_font

from .pattern import Pattern

DEFAULT_RMS = 2.0              # luma levels; PSNR ~ 42 dB
MASK_MIN, MASK_MAX = 0.5, 2.0  # texture mask range, relative to its mean
_OVERSAMPLE = 4


class ForensicEmbedder:
    """Adds the invisible mark for one watermark id. Thread-compatible (one per thread or a lock)."""

    def __init__(self, key: bytes, wm_id: int, *, rms: float = DEFAULT_RMS, pattern: Optional[Pattern] = None) -> None:
        self.pattern = pattern or Pattern(key)
        self.wm_id = wm_id
        self.rms = rms
        self._tile4 = self.pattern.tile_image(wm_id, oversample=_OVERSAMPLE)
        self._field: Optional[np.ndarray] = None
        self._field_size: tuple[int, int] = (0, 0)

    def field(self, width: int, height: int) -> np.ndarray:
        """The unit-RMS periodic pattern at the frame's geometry (float32, height x width), cached."""
        if self._field is None or self._field_size != (width, height):
            period = self.pattern.period_px(width, height)
            step = self.pattern.tile * _OVERSAMPLE / period      # oversampled-tile pixels per frame pixel
            reps_x = int(math.ceil(width * step / self._tile4.shape[1])) + 1
            reps_y = int(math.ceil(height * step / self._tile4.shape[0])) + 1
            canvas = np.tile(self._tile4, (reps_y, reps_x))
            m = np.array([[step, 0, 0], [0, step, 0]], np.float64)
            if step > 1.5:  # the frame is coarser than the oversampled tile: band-limit first (no aliasing)
                canvas = cv2.GaussianBlur(canvas, (0, 0), 0.4 * step)
            field = cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
            self._field = (field / np.sqrt(np.mean(field.astype(np.float64) ** 2))).astype(np.float32)
            self._field_size = (width, height)
        return self._field

    def delta(self, image_bgr: np.ndarray) -> np.ndarray:
        """The luma change for this frame (float32, height x width)."""
        return self.delta_for_luma(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY))

    def delta_for_luma(self, gray: np.ndarray) -> np.ndarray:
        """The luma change for a frame given its luma (uint8, height x width)."""
        h, w = gray.shape[:2]
        small = cv2.resize(gray, (max(8, w // 4), max(8, h // 4)), interpolation=cv2.INTER_AREA).astype(np.float32)
        mean = cv2.blur(small, (5, 5))
        var = np.maximum(cv2.blur(small * small, (5, 5)) - mean * mean, 0)
        activity = np.sqrt(np.sqrt(var) + 1.0)                  # compressive: sqrt of local contrast
        mask = np.clip(activity / activity.mean(), MASK_MIN, MASK_MAX)
        mask = cv2.GaussianBlur(mask, (0, 0), 1.5)
        gain = self.rms / math.sqrt(float(np.mean(mask * mask)))  # E[(m w)^2] = E[m^2] for unit-RMS w
        mask = cv2.resize(mask * gain, (w, h), interpolation=cv2.INTER_LINEAR)
        return mask * self.field(w, h)

    def embed(self, image_bgr: np.ndarray) -> np.ndarray:
        """A new BGR uint8 frame with the mark added."""
        step = _rounded(self.delta(image_bgr))
        return cv2.add(image_bgr, cv2.merge([step, step, step]), dtype=cv2.CV_8U)   # saturates

    def embed_i420(self, i420: np.ndarray) -> None:
        """Adds the mark in place to an I420 frame (PyAV's (h*3/2, w) yuv420p array): Y only."""
        y = i420[: i420.shape[0] * 2 // 3]
        d = self.delta_for_luma(y)
        d *= Y_PER_RGB
        cv2.add(y, _rounded(d), dst=y, dtype=cv2.CV_8U)   # in place, saturates


Y_PER_RGB = 219.0 / 255.0      # limited-range luma step per RGB level


def _rounded(delta: np.ndarray) -> np.ndarray:
    """The delta rounded once, as int16. OpenCV 5 rounds a uint8 + float32 add differently
    in different lanes of a row, so B, G and R of one pixel could get different steps."""
    return np.rint(delta).astype(np.int16)


def chroma_planes(i420: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Views of the U and V planes (h/2 x w/2 each) of a C-contiguous I420 array."""
    h, w = i420.shape[0] * 2 // 3, i420.shape[1]
    flat = i420.reshape(-1)
    n = (h // 2) * (w // 2)
    return flat[h * w: h * w + n].reshape(h // 2, w // 2), flat[h * w + n: h * w + 2 * n].reshape(h // 2, w // 2)


# -- visible mark ----------------------------------------------------------------------------------

VISIBLE_OPACITY = 0.5
VISIBLE_PERIOD_S = 90.0        # one lap of the drift path: at most ~10 % of the frame per second
VISIBLE_REF_PX = 30.0          # font size on a 720-px-high frame


@lru_cache(maxsize=64)
def _label_alpha(text: str, size_px: int) -> np.ndarray:
    """Coverage (float32 0..1) of the text with a 2-px outline ring, as (fill, outline)."""
    glyphs = label_font().render(text, size_px)[0].astype(np.float32) / 255.0
    pad = max(2, size_px // 10)
    fill = np.pad(glyphs, pad)
    ring = cv2.dilate(fill, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1, 2 * pad + 1)))
    both = np.stack([fill, ring])
    both.setflags(write=False)
    return both


def drift_position(t_s: float, free_w: int, free_h: int) -> tuple[int, int]:
    """Top-left corner on a slow closed Lissajous path (3:2) covering the free area."""
    phase = 2 * math.pi * t_s / VISIBLE_PERIOD_S
    x = 0.5 + 0.5 * math.sin(3 * phase + 0.7)
    y = 0.5 + 0.5 * math.sin(2 * phase)
    return int(round(x * max(free_w, 0))), int(round(y * max(free_h, 0)))


class VisibleMark:
    """Semi-transparent drifting label. `text(at_ms)` gives the label (e.g. with a clock)."""

    def __init__(self, text: Callable[[int], str] | str, *, opacity: float = VISIBLE_OPACITY) -> None:
        self._text = text if callable(text) else (lambda _ms, t=text: t)
        self.opacity = opacity

    def draw(self, image_bgr: np.ndarray, at_ms: int) -> np.ndarray:
        h, w = image_bgr.shape[:2]
        size = max(10, int(round(VISIBLE_REF_PX * h / 720)))
        fill, ring = _label_alpha(self._text(at_ms), size)
        lh, lw = fill.shape
        if lw > w:  # narrow portrait frames: shrink to fit
            size = max(8, int(size * w / lw))
            fill, ring = _label_alpha(self._text(at_ms), size)
            lh, lw = fill.shape
        x, y = drift_position(at_ms / 1000.0, w - lw, h - lh)
        x1, y1 = min(w, x + lw), min(h, y + lh)
        roi = image_bgr[y:y1, x:x1].astype(np.float32)
        f = fill[: y1 - y, : x1 - x, None] * self.opacity
        r = ring[: y1 - y, : x1 - x, None] * self.opacity * 0.8
        roi = roi * (1 - r) + 20.0 * r          # dark outline under the text: legible on light skin
        roi = roi * (1 - f) + 255.0 * f         # white text
        image_bgr[y:y1, x:x1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
        return image_bgr

    def draw_i420(self, i420: np.ndarray, at_ms: int) -> None:
        """The same label, in place on an I420 frame: white text (Y 235) over a dark ring (Y ~33),
        chroma pulled towards neutral under both at half resolution."""
        h = i420.shape[0] * 2 // 3
        w = i420.shape[1]
        size = max(10, int(round(VISIBLE_REF_PX * h / 720)))
        fill, ring = _label_alpha(self._text(at_ms), size)
        lh, lw = fill.shape
        if lw > w:
            size = max(8, int(size * w / lw))
            fill, ring = _label_alpha(self._text(at_ms), size)
            lh, lw = fill.shape
        x, y = drift_position(at_ms / 1000.0, w - lw, h - lh)
        x, y = x & ~1, y & ~1                     # even: the chroma block grid
        x1, y1 = min(w, x + lw), min(h, y + lh)
        f = fill[: y1 - y, : x1 - x] * self.opacity
        r = ring[: y1 - y, : x1 - x] * self.opacity * 0.8
        luma = i420[y:y1, x:x1].astype(np.float32)
        luma = luma * (1 - r) + (16 + 20 * Y_PER_RGB) * r
        luma = luma * (1 - f) + 235.0 * f
        i420[y:y1, x:x1] = np.clip(luma + 0.5, 0, 255).astype(np.uint8)
        cx, cy, cx1, cy1 = x // 2, y // 2, x1 // 2, y1 // 2
        if cx1 <= cx or cy1 <= cy:
            return
        cover = 1 - (1 - f) * (1 - r)             # how much of the pixel the label replaced
        cover = cv2.resize(cover, (cx1 - cx, cy1 - cy), interpolation=cv2.INTER_AREA)
        for plane in chroma_planes(i420):
            c = plane[cy:cy1, cx:cx1].astype(np.float32)
            plane[cy:cy1, cx:cx1] = np.clip(c + (128.0 - c) * cover + 0.5, 0, 255).astype(np.uint8)


def viewer_label(viewer: str, wm_id: int, when: Optional[dt.datetime] = None) -> Callable[[int], str]:
    """'<viewer> · WM 1a2b3c4d · 2025-01-31 14:02 UTC': the current UTC time (a replay or a
    live view), or `when` (an export: the time it was made)."""

    def text(at_ms: int) -> str:
        now = dt.datetime.now(dt.timezone.utc) if when is None else when
        return f"{viewer} \u00b7 WM {wm_id:08x} \u00b7 {now:%Y-%m-%d %H:%M} UTC"

    return text


class Watermarker:
    """Visible + invisible marks for one viewer/export: pass `frame_hook` to export_recording."""

    def __init__(self, key: bytes, wm_id: int, label: Callable[[int], str] | str, *,
                 rms: float = DEFAULT_RMS, visible: bool = True) -> None:
        self.forensic = ForensicEmbedder(key, wm_id, rms=rms)
        self.visible = VisibleMark(label) if visible else None

    def frame_hook(self, image_bgr: np.ndarray, at_ms: int) -> np.ndarray:
        if self.visible is not None:
            image_bgr = self.visible.draw(image_bgr, at_ms)
        return self.forensic.embed(image_bgr)

    def mark_i420(self, i420: np.ndarray, at_ms: int) -> None:
        """Both marks, in place, on an I420 frame (live video: the decoder's planes, no BGR)."""
        if self.visible is not None:
            self.visible.draw_i420(i420, at_ms)
        self.forensic.embed_i420(i420)
