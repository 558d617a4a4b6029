"""The leak a forensic watermark must survive, and its trace: for the watermark's tests and benchmark.

A moving-photo clip (loadtest.synthetic_video) is marked and encoded as recorder/export.py
exports it; the leaker decodes it, transforms every frame (cv2: crop, scale, colour, a
screen capture) and re-encodes it at 500 kbit/s (VP8 or H.264); the detector then reads
the whole file. ATTACKS are the transforms the watermark is required to survive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from loadtest.synthetic_video import decode, encode, moving_photo
from watermark.detect import ClipAccumulator, Detection, detect_image
from watermark.embed import DEFAULT_RMS, Watermarker, viewer_label
from watermark.pattern import Pattern

LEAK_BITRATE = 500_000
EXPORT_BITRATE_PER_PIXEL_S = 2_500_000 / (1280 * 720 * 30)   # recorder/export.py: 2.5 Mbit/s, sized for 720p30


# -- the leaker's transforms ----------------------------------------------------------------------------------

def crop(fraction: float) -> Callable[[np.ndarray], np.ndarray]:
    """Cut `fraction` of the width and of the height away (asymmetric: 2/3 left/top, 1/3 right/bottom)."""
    def f(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        cx, cy = int(w * fraction), int(h * fraction)
        return img[cy * 2 // 3: h - cy // 3, cx * 2 // 3: w - cx // 3]
    return f


def scale(factor: float, interpolation: int = cv2.INTER_AREA) -> Callable[[np.ndarray], np.ndarray]:
    def f(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        return cv2.resize(img, (round(w * factor) // 2 * 2, round(h * factor) // 2 * 2), interpolation=interpolation)
    return f


def brightness_contrast(gain: float, offset: float, gamma: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    lut = np.clip(255 * ((np.arange(256) / 255) ** gamma) * gain + offset, 0, 255).astype(np.uint8)
    return lambda img: cv2.LUT(img, lut)


def screen_capture(img: np.ndarray) -> np.ndarray:
    """A player window captured off a screen: the video shown at 1.37x (bicubic, with the player's
    sharpening-free scaler), then the capture scaled to 0.62 of that with bilinear, a slight
    anisotropy (1.0 x 0.97), gamma 0.92, and 8-bit rounding at every step."""
    h, w = img.shape[:2]
    big = cv2.resize(img, (round(w * 1.37), round(h * 1.37)), interpolation=cv2.INTER_CUBIC)
    small = cv2.resize(big, (round(w * 1.37 * 0.62) // 2 * 2, round(h * 1.37 * 0.62 * 0.97) // 2 * 2),
                       interpolation=cv2.INTER_LINEAR)
    return brightness_contrast(1.0, 0.0, 0.92)(small)


def chain(*fs: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def f(img: np.ndarray) -> np.ndarray:
        for g in fs:
            img = g(img)
        return img
    return f


def identity(img: np.ndarray) -> np.ndarray:
    return img


@dataclass(frozen=True)
class Attack:
    name: str
    transform: Callable[[np.ndarray], np.ndarray]
    codec: str                  # the leaker's re-encode
    bitrate: int = LEAK_BITRATE
    drop_every: int = 0         # keep 1 of every `drop_every` frames... 0: keep all (frame-rate change)


ATTACKS = [
    Attack("VP8 re-encode 500 kbit/s", identity, "vp8"),
    Attack("H.264 re-encode 500 kbit/s", identity, "h264"),
    Attack("downscale 50 % (+H.264 500k)", scale(0.5), "h264"),
    Attack("crop 10 % (+H.264 500k)", crop(0.10), "h264"),
    Attack("brightness +30, contrast x0.8 (+VP8 500k)", brightness_contrast(0.8, 30), "vp8"),
    Attack("contrast x1.3, gamma 0.8 (+H.264 500k)", brightness_contrast(1.3, -30, 0.8), "h264"),
    Attack("resample 0.6 area -> 1.0 cubic (+VP8 500k)",
           lambda img: cv2.resize(scale(0.6)(img), (img.shape[1], img.shape[0]), interpolation=cv2.INTER_CUBIC), "vp8"),
    Attack("screen capture 1.37x cubic -> 0.62x linear, 3 % anisotropy, gamma (+H.264 500k)", screen_capture, "h264"),
    Attack("all at once: crop 10 %, 50 %, brightness, (+H.264 500k, 2/3 of the frames)",
           chain(crop(0.10), scale(0.5), brightness_contrast(0.85, 20)), "h264", drop_every=3),
]


# -- the pipeline ---------------------------------------------------------------------------------------------

@dataclass
class Exported:
    data: bytes            # the export as the viewer received it
    fps: float
    psnr_db: float         # watermarked vs unmarked frames (before any encoding), invisible mark only
    embed_ms: float        # per frame, visible + invisible


def export_clip(key: bytes, wm_id: int, width: int, height: int, seconds: float, fps: float, *, seed: int = 0,
                bitrate: Optional[int] = None, visible: bool = True, rms: float = DEFAULT_RMS,
                fast: bool = True) -> Exported:
    """Marks a moving-photo clip and encodes it as recorder/export.py does (VP8, 2.5 Mbit/s at 720p30,
    the same bits per pixel at other sizes)."""
    n = int(round(seconds * fps))
    marker = Watermarker(key, wm_id, viewer_label("Dr. Example", wm_id), visible=visible, rms=rms)
    mse, spent, marked = [], 0.0, []
    for i, frame in enumerate(moving_photo(width, height, n, seed=seed, fps=fps)):
        t0 = time.perf_counter()
        out = marker.frame_hook(frame.copy(), int(i * 1000 / fps))
        spent += time.perf_counter() - t0
        reference = marker.visible.draw(frame.copy(), int(i * 1000 / fps)) if marker.visible is not None else frame
        mse.append(np.mean((out.astype(np.float32) - reference) ** 2))
        marked.append(out)
    bitrate = bitrate or int(EXPORT_BITRATE_PER_PIXEL_S * width * height * fps)
    data = encode(marked, "vp8", bitrate, fps, fast=fast)
    return Exported(data, fps, 10 * math.log10(255 ** 2 / max(float(np.mean(mse)), 1e-9)), 1000 * spent / n)


def leak(exported: bytes, fps: float, attack: Attack, *, fast: bool = True, seconds: Optional[float] = None) -> bytes:
    """The leaker: decode, transform every frame, re-encode (first `seconds` only, if given)."""
    frames = (attack.transform(f) for i, f in enumerate(decode(exported))
              if (not attack.drop_every or i % attack.drop_every) and (seconds is None or i < seconds * fps))
    out_fps = fps * (1 - 1 / attack.drop_every) if attack.drop_every else fps
    return encode(frames, attack.codec, attack.bitrate, out_fps, fast=fast)


def detect_file(pattern: Pattern, data: bytes) -> Detection:
    acc = ClipAccumulator()
    for luma in decode(data, "gray"):
        acc.add(luma)
    return detect_image(pattern, acc.mean, frames=acc.frames)
