"""Framing, sharpness, exposure and colour cast respond to the right changes, and only to those."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from media.processors.face_landmarks import FaceLandmarkDetector, FaceLandmarks
from media.processors.framing import framing
from media.processors.guidance import GuidanceConfig
from media.processors.image_quality import colour_cast, exposure, face_patch, sharpness


def _landmarks_in_box(x0: float, y0: float, x1: float, y1: float, width: int = 640, height: int = 480) -> FaceLandmarks:
    normalized = np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], np.float32) / (width, height, 1)
    return FaceLandmarks(normalized.astype(np.float32), normalized[:, :2] * (width, height), None, width, height)


def test_framing_of_a_known_box():
    f = framing(_landmarks_in_box(400, 60, 560, 300))  # 160 x 240 px, right of centre, high
    assert f.height_frac == pytest.approx(0.5) and f.width_frac == pytest.approx(0.25)
    assert f.area_frac == pytest.approx(0.125)
    assert f.offset_x == pytest.approx((480 - 320) / 320) and f.offset_y == pytest.approx((180 - 240) / 240)


def test_framing_follows_the_face_in_a_real_photo(stills: FaceLandmarkDetector, face_bgr: np.ndarray,
                                                  face_landmarks: FaceLandmarks):
    base = framing(face_landmarks)
    assert 0.25 < base.height_frac < 0.45 and abs(base.offset_x) < 0.1 and base.offset_y < -0.1  # portrait: face high
    h, w = face_bgr.shape[:2]
    canvas = np.zeros((h, 2 * w, 3), np.uint8)
    canvas[:, w:] = face_bgr  # same face, right half of a twice-as-wide frame
    moved = stills.detect(canvas)
    assert moved is not None
    f = framing(moved)
    assert f.offset_x == pytest.approx(0.5 + base.offset_x / 2, abs=0.03)
    assert f.height_frac == pytest.approx(base.height_frac, abs=0.02)
    assert f.width_frac == pytest.approx(base.width_frac / 2, abs=0.02)


def _sharpness(bgr: np.ndarray, lm: FaceLandmarks) -> float:
    return sharpness(face_patch(bgr, lm))


def test_sharpness_drops_with_blur(face_bgr: np.ndarray, face_landmarks: FaceLandmarks):
    sharp = _sharpness(face_bgr, face_landmarks)
    blurred = [_sharpness(cv2.GaussianBlur(face_bgr, (0, 0), sigma), face_landmarks) for sigma in (0.7, 1.5, 3.0)]
    assert sharp > blurred[0] > blurred[1] > blurred[2]
    assert blurred[1] < 0.3 * sharp
    motion = cv2.filter2D(face_bgr, -1, np.full((1, 9), 1 / 9, np.float32))  # 9 px horizontal motion blur
    assert _sharpness(motion, face_landmarks) < 0.5 * sharp


def test_sharpness_is_normalised_for_face_size(stills: FaceLandmarkDetector, face_bgr: np.ndarray,
                                               face_landmarks: FaceLandmarks):
    # Twice the pixels, no new detail: the raw Laplacian variance of the face box falls ~10x.
    bigger = cv2.resize(face_bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    lm = stills.detect(bigger)
    assert lm is not None
    assert _sharpness(bigger, lm) == pytest.approx(_sharpness(face_bgr, face_landmarks), rel=0.3)


def test_exposure_flags_dark_and_bright_faces(face_bgr: np.ndarray, face_landmarks: FaceLandmarks):
    config = GuidanceConfig()
    normal = exposure(face_patch(face_bgr, face_landmarks))
    dark = exposure(face_patch((face_bgr * 0.35).astype(np.uint8), face_landmarks))
    bright = exposure(face_patch(np.clip(face_bgr * 1.8, 0, 255).astype(np.uint8), face_landmarks))
    assert normal.p05 < normal.p50 < normal.p95
    assert normal.p95 > config.dark.off and normal.clipped < config.bright.off
    assert dark.p95 < config.dark.on and dark.clipped == 0
    assert bright.clipped > config.bright.on and bright.p50 > normal.p50


def test_exposure_looks_at_the_face_not_the_background(face_bgr: np.ndarray, face_landmarks: FaceLandmarks):
    (x0, y0), (x1, y1) = face_landmarks.pixels.min(axis=0).astype(int), face_landmarks.pixels.max(axis=0).astype(int)
    window = np.full_like(face_bgr, 255)  # a blown-out window all around the face
    window[y0:y1, x0:x1] = face_bgr[y0:y1, x0:x1]
    assert exposure(face_patch(window, face_landmarks)) == exposure(face_patch(face_bgr, face_landmarks))


@pytest.mark.parametrize("gains,axis,sign", [  # gains in B, G, R order
    ((0.6, 0.9, 1.0), "b", +1),  # warm (tungsten): yellow
    ((1.0, 0.9, 0.7), "b", -1),  # cool (shade, blue hour): blue
    ((0.8, 1.0, 0.8), "a", -1),  # green (some fluorescent tubes)
    ((1.0, 0.8, 1.0), "a", +1),  # magenta
])
def test_colour_cast_moves_the_right_way(face_bgr: np.ndarray, gains: tuple[float, float, float], axis: str, sign: int):
    before = colour_cast(face_bgr)
    after = colour_cast(np.clip(face_bgr * np.array(gains), 0, 255).astype(np.uint8))
    assert sign * (getattr(after, axis) - getattr(before, axis)) > 6


def test_a_grey_room_has_no_cast_and_a_tinted_one_does():
    grey = np.full((480, 640, 3), 140, np.uint8)
    assert colour_cast(grey).chroma < 1
    tinted = (grey * np.array([0.6, 0.85, 1.0])).astype(np.uint8)  # B, G, R: warm
    cast = colour_cast(tinted)
    assert cast.b > 15 and cast.chroma > GuidanceConfig().cast.on
