"""Face regions: where they are on a real face, what they leave out, and how they follow pose."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from media.processors.face_landmarks import FaceLandmarkDetector, FaceLandmarks
from media.processors.observations import EXCLUDE_MARGIN, face_length, frame_region_masks
from media.processors.regions import (
    _LEFT_CHEEK,
    _RIGHT_CHEEK,
    EXCLUDED_FEATURES,
    REGION_NAMES,
    region_facing,
    region_masks,
    triangle_facing,
)

from .warps import rotate_face_mesh, rotate_in_plane

_MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 0, 17, 18, 200, 199, 175, 152)
_TOP, _CHIN = 10, 152


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def _face_axes(lm: FaceLandmarks) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in the image: chin -> forehead ("up" in the face) and its perpendicular
    pointing to image right, so positions compare correctly on a tilted head."""
    up = lm.pixels[_TOP] - lm.pixels[_CHIN]
    up = up / np.linalg.norm(up)
    return up, np.array([-up[1], up[0]])


def assert_sane_regions(lm: FaceLandmarks, masks: dict[str, np.ndarray]) -> None:
    length = face_length(lm)
    hull = np.zeros(masks["forehead"].shape, np.uint8)
    cv2.fillConvexPoly(hull, np.round(cv2.convexHull(lm.pixels)).astype(np.int32), 1)
    for name, m in masks.items():
        assert m.sum() > 0.015 * length ** 2, name  # every region has a real patch of skin
        assert not (m & (hull == 0)).any(), f"{name} leaves the face"
    for a, b in itertools.combinations(masks, 2):
        assert not (masks[a] & masks[b]).any(), f"{a} overlaps {b}"

    up, right = _face_axes(lm)
    c = {name: _centroid(m) for name, m in masks.items()}
    height = {name: float(p @ up) for name, p in c.items()}
    across = {name: float(p @ right) for name, p in c.items()}
    assert height["forehead"] > height["nose"] > height["chin"]
    assert height["forehead"] > max(height["left_cheek"], height["right_cheek"])
    assert min(height["left_cheek"], height["right_cheek"]) > height["chin"]
    # Unmirrored camera image: the patient's right cheek is on the image's left.
    assert across["right_cheek"] < across["nose"] < across["left_cheek"]
    assert abs(across["forehead"] - across["nose"]) < 0.1 * length
    assert abs(across["chin"] - across["nose"]) < 0.1 * length


def test_regions_on_a_real_face(face_bgr: np.ndarray, face_landmarks: FaceLandmarks):
    masks = frame_region_masks(face_landmarks)
    assert tuple(masks) == REGION_NAMES == ("forehead", "left_cheek", "right_cheek", "nose", "chin")
    assert all(m.shape == face_bgr.shape[:2] and m.dtype == bool for m in masks.values())
    assert_sane_regions(face_landmarks, masks)
    # The two cheeks are the same size within the photo's slight asymmetry and turn.
    left, right = masks["left_cheek"].sum(), masks["right_cheek"].sum()
    assert abs(left - right) < 0.15 * max(left, right)


def test_eyes_brows_and_lips_are_kept_at_a_distance(face_landmarks: FaceLandmarks):
    masks = frame_region_masks(face_landmarks)
    margin = EXCLUDE_MARGIN * face_length(face_landmarks)
    features = np.zeros(masks["nose"].shape, np.uint8)
    for f in EXCLUDED_FEATURES:
        cv2.fillConvexPoly(features, np.round(cv2.convexHull(face_landmarks.pixels[list(f)])).astype(np.int32), 1)
    distance = cv2.distanceTransform(1 - features, cv2.DIST_L2, 5)  # px to the nearest feature pixel
    for name, m in masks.items():
        assert distance[m].min() >= margin - 1.5, name


def test_left_and_right_cheek_are_mirror_images(face_landmarks: FaceLandmarks):
    """The hand-written left cheek must be the right one's mirror: reflect across the
    face's midline (fitted to the photo's midline landmarks) and compare, point by point."""
    p = face_landmarks.pixels.astype(np.float64)
    mid = p[list(_MIDLINE)]
    centre = mid.mean(axis=0)
    direction = np.linalg.svd(mid - centre)[2][0]  # principal axis of the midline points
    normal = np.array([-direction[1], direction[0]])

    def reflect(q: np.ndarray) -> np.ndarray:
        return q - 2 * np.outer((q - centre) @ normal, normal)

    error = np.linalg.norm(reflect(p[list(_RIGHT_CHEEK)]) - p[list(_LEFT_CHEEK)], axis=1)
    assert error.max() < 0.03 * face_length(face_landmarks)


@pytest.mark.parametrize("pose", ["yaw+25", "yaw-25", "pitch+15", "pitch-15", "roll+20", "roll-20"])
def test_regions_follow_moderate_pose(stills: FaceLandmarkDetector, face_bgr: np.ndarray,
                                      face_landmarks: FaceLandmarks, pose: str):
    kind, degrees = pose[:-3], float(pose[-3:])
    if kind == "roll":
        bgr = rotate_in_plane(face_bgr, degrees)
    else:
        bgr = rotate_face_mesh(face_bgr, face_landmarks, **{f"{kind}_deg": degrees})
    lm = stills.detect(bgr)
    assert lm is not None
    assert_sane_regions(lm, frame_region_masks(lm))


def test_facing_tells_which_cheek_turned_away(stills: FaceLandmarkDetector, face_bgr: np.ndarray,
                                              face_landmarks: FaceLandmarks):
    def facing(lm: FaceLandmarks) -> dict[str, float]:
        points3d = np.column_stack([lm.pixels, lm.normalized[:, 2] * lm.width])
        return {name: region_facing(points3d, name) for name in REGION_NAMES}

    frontal = facing(face_landmarks)
    assert frontal["forehead"] > 0.85 and frontal["chin"] > 0.85
    assert abs(frontal["left_cheek"] - frontal["right_cheek"]) < 0.1
    # Patient turns to their left (yaw > 0): the left cheek turns away from the camera.
    turned = stills.detect(rotate_face_mesh(face_bgr, face_landmarks, yaw_deg=30))
    assert turned is not None
    f = facing(turned)
    assert f["left_cheek"] < frontal["left_cheek"] - 0.08 and f["right_cheek"] > frontal["right_cheek"] + 0.08


def test_grazing_skin_is_cut_out(face_landmarks: FaceLandmarks):
    """A flat face (depth 0) seen square on keeps everything; the same flat face turned
    80 degrees about the vertical axis is all grazing, so nothing is left."""
    shape = (face_landmarks.height, face_landmarks.width)
    p = face_landmarks.pixels.astype(np.float64)
    flat = region_masks(p, shape, depth=np.zeros(len(p)))
    assert all(np.array_equal(flat[n], m) for n, m in region_masks(p, shape).items())

    theta = np.radians(80)
    cx = p[:, 0].mean()
    turned = np.column_stack([cx + (p[:, 0] - cx) * np.cos(theta), p[:, 1]])
    depth = (p[:, 0] - cx) * np.sin(theta)
    facing = triangle_facing(np.column_stack([turned, depth]))
    valid = facing > 0  # skip triangles degenerate in the flat photo
    assert np.allclose(facing[valid], np.cos(theta), atol=1e-6)
    assert not any(m.any() for m in region_masks(turned, shape, depth=depth).values())
