"""Skin observations: the report's shape, and each measure moving the right way (and only
where it should) under controlled edits of a real photo confined to one region's mask."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from media.processors.face_landmarks import FaceLandmarkDetector, FaceLandmarks
from media.processors.observations import DISCLAIMER, frame_region_masks, observe_skin
from media.processors.regions import REGION_NAMES

_MEASURES = ("lightness", "redness", "yellowness", "ita_deg", "spots", "roughness", "highlights", "saturated")


@pytest.fixture(scope="module")
def base(face_bgr: np.ndarray, face_landmarks: FaceLandmarks) -> dict:
    return observe_skin(face_bgr, face_landmarks)


@pytest.fixture(scope="module")
def masks(face_landmarks: FaceLandmarks) -> dict[str, np.ndarray]:
    return frame_region_masks(face_landmarks)


def _regions(bgr: np.ndarray, lm: FaceLandmarks) -> dict[str, dict]:
    return observe_skin(bgr, lm)["regions"]


def _assert_plain_json(value: object) -> None:
    """Only JSON's own types, so any serialiser (not just json with numpy's float
    subclass tolerated) stores the report as it is."""
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            _assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain_json(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), (type(value), value)


def test_report_on_a_real_face(base: dict):
    assert base["kind"] == "skin-observations" and base["method_version"] == "1"
    assert base["disclaimer"] == DISCLAIMER == "Observations to support the doctor's review; not a diagnosis."
    assert base["status"] == "ok"
    image = base["image"]
    assert (image["width"], image["height"]) == (512, 600)
    assert 180 < image["face_length_px"] < 230 and set(image["colour_cast"]) == {"a", "b", "chroma"}
    assert tuple(base["regions"]) == REGION_NAMES
    for name, r in base["regions"].items():
        assert r["status"] == "ok", name
        assert set(_MEASURES) <= set(r), name
        assert 40 < r["lightness"] < 90 and 5 < r["redness"] < 40 and 10 < r["yellowness"] < 45, (name, r)
        assert 0.5 < r["roughness"] < 5 and 0.5 < r["facing"] <= 1 and r["area"] > 0.015, (name, r)
        spots = r["spots"]
        assert spots["count"] == len(spots["largest"]) <= 2 and 0 <= spots["area_fraction"] < 0.05, (name, spots)
    _assert_plain_json(base)
    assert json.loads(json.dumps(base)) == base


def test_a_frame_without_a_face_gives_an_empty_report(stills: FaceLandmarkDetector):
    wall = np.full((480, 640, 3), (90, 120, 160), np.uint8)
    assert stills.detect(wall) is None
    report = observe_skin(wall, None)
    assert report["status"] == "no-face" and report["regions"] == {}
    assert report["kind"] == "skin-observations" and report["disclaimer"] == DISCLAIMER
    assert report["image"]["colour_cast"]["b"] > 10  # the frame's light is still described
    _assert_plain_json(report)


def test_landmarks_of_another_frame_are_refused(face_bgr: np.ndarray, face_landmarks: FaceLandmarks):
    with pytest.raises(ValueError, match="landmarks are of a 512x600 frame"):
        observe_skin(cv2.resize(face_bgr, (256, 300)), face_landmarks)
    with pytest.raises(ValueError, match="BGR frame"):
        observe_skin(face_bgr[..., 0], face_landmarks)


def _confined(edited: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = original.copy()
    out[mask] = np.clip(edited[mask], 0, 255).astype(np.uint8)
    return out


def test_redness_rises_where_the_skin_is_reddened(face_bgr, face_landmarks, base, masks):
    reddened = face_bgr.astype(np.float32) * (0.88, 0.88, 1.0)  # B, G down: redder, like erythema
    after = _regions(_confined(reddened, face_bgr, masks["left_cheek"]), face_landmarks)
    before = base["regions"]
    assert after["left_cheek"]["redness"] > before["left_cheek"]["redness"] + 4
    assert after["right_cheek"]["redness"] == pytest.approx(before["right_cheek"]["redness"], abs=0.2)
    for name in ("forehead", "nose", "chin"):
        assert after[name] == before[name], name


def _spot_centres(mask: np.ndarray, radius: int, count: int) -> list[tuple[int, int]]:
    """`count` places well inside `mask`, at least 5 radii apart; deterministic."""
    room = cv2.erode(mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 9,) * 2))
    ys, xs = np.nonzero(room)
    picked: list[tuple[int, int]] = []
    for i in np.random.default_rng(7).permutation(len(xs)):
        if all(np.hypot(xs[i] - x, ys[i] - y) >= 5 * radius for x, y in picked):
            picked.append((int(xs[i]), int(ys[i])))
            if len(picked) == count:
                return picked
    raise AssertionError(f"room for only {len(picked)} spots")


@pytest.mark.parametrize("radius,count", [(2, 6), (3, 5), (4, 4)])
def test_dark_spots_are_counted_and_sized(face_bgr, face_landmarks, base, masks, radius: int, count: int):
    mask = masks["forehead"]
    centres = _spot_centres(mask, radius, count)
    disks = np.zeros(mask.shape, np.uint8)
    for c in centres:
        cv2.circle(disks, c, radius, 1, -1)
    spotted = _confined(face_bgr * 0.5, face_bgr, disks.astype(bool))  # half the light: a brown macule
    found = _regions(spotted, face_landmarks)["forehead"]["spots"]
    before = base["regions"]["forehead"]["spots"]

    assert abs(found["count"] - before["count"] - count) <= 1
    expected = disks[mask].sum() / mask.sum()
    assert found["area_fraction"] - before["area_fraction"] == pytest.approx(expected, rel=0.25)
    h, w = mask.shape
    listed = np.array([(s["x"] * w, s["y"] * h) for s in found["largest"]])
    for c in centres:  # each painted spot is listed where it was painted, at its size
        distance = np.hypot(*(listed - c).T)
        nearest = found["largest"][int(distance.argmin())]
        assert distance.min() < radius
        assert nearest["diameter"] * base["image"]["face_length_px"] == pytest.approx(2 * radius, abs=1)


def test_fine_texture_raises_roughness(face_bgr, face_landmarks, base, masks):
    grain = cv2.GaussianBlur(np.random.default_rng(3).normal(size=face_bgr.shape[:2]).astype(np.float32), (0, 0), 0.8)
    grain *= 12 / grain.std()  # grey levels; ~2 px grain, ~1 mm here: within the roughness band
    textured = face_bgr.astype(np.float32) + grain[..., None]
    after = _regions(_confined(textured, face_bgr, masks["chin"]), face_landmarks)
    before = base["regions"]
    assert after["chin"]["roughness"] > 1.2 * before["chin"]["roughness"]
    # Texture, not spots (one borderline feature may flip as the grain reshapes it).
    assert abs(after["chin"]["spots"]["count"] - before["chin"]["spots"]["count"]) <= 1
    for name in ("forehead", "left_cheek", "right_cheek", "nose"):
        assert after[name] == before[name], name


def test_blur_lowers_roughness(face_bgr, face_landmarks, base, masks):
    blurred = cv2.GaussianBlur(face_bgr, (0, 0), 2.0)
    after = _regions(_confined(blurred, face_bgr, masks["nose"]), face_landmarks)
    assert after["nose"]["roughness"] < 0.6 * base["regions"]["nose"]["roughness"]
    assert after["nose"]["redness"] == pytest.approx(base["regions"]["nose"]["redness"], abs=0.5)  # colour kept
    for name in ("forehead", "left_cheek", "right_cheek", "chin"):
        assert after[name] == base["regions"][name], name


def test_measures_do_not_scale_with_resolution(stills: FaceLandmarkDetector, face_bgr, base):
    """Twice the pixels, no new detail: the same numbers, within resampling differences."""
    bigger = cv2.resize(face_bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    lm = stills.detect(bigger)
    assert lm is not None
    report = observe_skin(bigger, lm)
    assert report["image"]["face_length_px"] == pytest.approx(2 * base["image"]["face_length_px"], rel=0.03)
    for name, r in report["regions"].items():
        b = base["regions"][name]
        assert r["area"] == pytest.approx(b["area"], rel=0.05), name
        assert r["redness"] == pytest.approx(b["redness"], abs=0.5), name
        assert r["lightness"] == pytest.approx(b["lightness"], abs=1), name
        assert r["roughness"] == pytest.approx(b["roughness"], rel=0.1), name
        assert abs(r["spots"]["count"] - b["spots"]["count"]) <= 1, name  # a borderline one may flip


def test_a_magenta_light_reads_as_redness_and_shows_in_the_cast(face_bgr, face_landmarks, base):
    """Why the report carries the cast: tinted light raises every region's redness."""
    tinted = np.clip(face_bgr * np.array([1.0, 0.85, 1.0]), 0, 255).astype(np.uint8)  # B, G, R
    report = observe_skin(tinted, face_landmarks)
    assert report["image"]["colour_cast"]["a"] > base["image"]["colour_cast"]["a"] + 5
    assert all(report["regions"][n]["redness"] > base["regions"][n]["redness"] + 3 for n in REGION_NAMES)


def test_a_region_outside_the_frame_is_reported_not_visible(face_bgr: np.ndarray, face_landmarks: FaceLandmarks):
    # The same face 45% of the width further right: its left cheek (image right) is off the frame.
    h, w = face_bgr.shape[:2]
    shift = round(0.45 * w)
    moved = np.zeros_like(face_bgr)
    moved[:, shift:] = face_bgr[:, :w - shift]
    lm = dataclasses.replace(face_landmarks, normalized=face_landmarks.normalized + (shift / w, 0, 0),
                             pixels=face_landmarks.pixels + (shift, 0))
    regions = observe_skin(moved, lm)["regions"]
    assert regions["left_cheek"]["status"] == "not-visible" and "redness" not in regions["left_cheek"]
    assert regions["right_cheek"]["status"] == "ok"
    assert regions["right_cheek"]["redness"] == pytest.approx(
        observe_skin(face_bgr, face_landmarks)["regions"]["right_cheek"]["redness"], abs=0.3)
