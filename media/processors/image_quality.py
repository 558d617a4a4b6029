"""Image quality of the face region: sharpness and exposure; colour cast of the frame.

Sharpness and exposure look at the face only (the background can be sharp or bright
while the face is not). The face box is resampled to a fixed height first, so the
numbers do not scale with the face's size in pixels (the raw Laplacian variance of a
face twice as large falls about tenfold), and only pixels inside the face outline count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .face_landmarks import FaceLandmarks

PATCH_HEIGHT = 128  # px; plenty for skin/eye detail at 5-15 fps analysis, cheap to filter
_HULL_SHRINK = 0.9  # pull the outline 10% towards its centre: hair and background edges stay out
_CLIPPED = 250  # luma at or above which highlights have lost skin texture


@dataclass(frozen=True)
class FacePatch:
    gray: np.ndarray  # uint8 luma (Y') of the face box, PATCH_HEIGHT rows
    mask: np.ndarray  # bool, same shape: inside the (shrunk) face outline


@dataclass(frozen=True)
class Exposure:
    # Percentiles of face luma, 0-255 (gamma-encoded, as the patient's camera produced it).
    p05: float
    p50: float
    p95: float
    clipped: float  # fraction of face pixels at or above _CLIPPED


@dataclass(frozen=True)
class ColourCast:
    # CIELAB a*, b* of the frame's mean colour. Grey-world: an ordinary room averages to
    # roughly neutral, so a large chroma means the light is tinted. The whole frame, not
    # the face: skin is not grey, and a face-based test would flag skin tones.
    a: float  # > 0 magenta/red, < 0 green
    b: float  # > 0 yellow (warm light), < 0 blue (cool light)
    chroma: float  # hypot(a, b)


def face_patch(bgr: np.ndarray, landmarks: FaceLandmarks) -> FacePatch:
    """The face box of `bgr` (BGR uint8) as size-normalised luma plus the face mask."""
    h, w = bgr.shape[:2]
    pts = landmarks.pixels
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(max(x1, x0 + 2), w), min(max(y1, y0 + 2), h)
    gray = cv2.cvtColor(bgr[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    scale = PATCH_HEIGHT / gray.shape[0]
    size = (max(2, round(gray.shape[1] * scale)), PATCH_HEIGHT)
    # INTER_AREA averages when shrinking; when enlarging it degenerates to nearest-neighbour,
    # whose blocky edges would read as sharpness, so enlarge with INTER_LINEAR.
    gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)

    hull = cv2.convexHull(pts).reshape(-1, 2)
    centre = hull.mean(axis=0)
    hull = ((centre + (hull - centre) * _HULL_SHRINK) - (x0, y0)) * scale
    mask = np.zeros(gray.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
    return FacePatch(gray, mask.astype(bool))


def sharpness(patch: FacePatch) -> float:
    """Variance of the Laplacian inside the face: falls with defocus and motion blur.

    Absolute values depend on the camera, its compression and the light (the variance
    scales with contrast squared: a face at a third of the brightness reads ~9x softer),
    so compare a stream with itself over time (guidance.py), not with a fixed number.
    """
    lap = cv2.Laplacian(patch.gray, cv2.CV_32F)
    return float(lap[patch.mask].var())


def exposure(patch: FacePatch) -> Exposure:
    luma = patch.gray[patch.mask]
    p05, p50, p95 = np.percentile(luma, (5, 50, 95))
    return Exposure(float(p05), float(p50), float(p95), float(np.count_nonzero(luma >= _CLIPPED)) / luma.size)


def colour_cast(bgr: np.ndarray) -> ColourCast:
    mean = np.array([[cv2.mean(bgr)[:3]]], dtype=np.float32) / 255.0
    _, a, b = cv2.cvtColor(mean, cv2.COLOR_BGR2Lab)[0, 0]
    return ColourCast(float(a), float(b), math.hypot(a, b))
