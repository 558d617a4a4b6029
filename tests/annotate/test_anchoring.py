"""Face anchoring on a real MediaPipe landmark set: a mark drawn on the face follows
it through translation, rotation and scale, and the anchor choice is sound where the
mesh is ambiguous (outside the face outline, folded over itself, collapsed)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from mediapipe.tasks.python.vision import FaceLandmarksConnections

from annotate import limits
from annotate.anchoring import FACE_TRIANGLES, FaceAnchor, OffFaceError, anchor, anchor_points, resolve, resolve_points
from annotate.board import AnnotationBoard
from tests.annotate.conftest import FRAME_H, FRAME_W

FRAME = np.array([FRAME_W, FRAME_H], dtype=np.float64)
LEFT_EYE_OUTER, LEFT_MOUTH_CORNER = 263, 291  # the patient's left, on the image's right
POSES = {
    "translated": dict(centre=(300, 250)),
    "rotated 30°": dict(angle_deg=30),
    "rotated -45°, smaller": dict(angle_deg=-45, scale=0.6, centre=(900, 480)),
    "larger, rotated, moved": dict(angle_deg=15, scale=1.8, centre=(700, 330)),
}


def px(landmarks: np.ndarray, index: int) -> np.ndarray:
    return landmarks[index, :2] * FRAME


@pytest.fixture(scope="module")
def drawn(pose):
    """The pose the doctor drew on, its landmarks, and marks in its frame's pixels."""
    base = pose()
    lm = base.landmarks()
    cheek = (px(lm, LEFT_EYE_OUTER) + px(lm, LEFT_MOUTH_CORNER)) / 2
    # a small circle drawn around the cheek point, as a stroke
    angles = np.linspace(0, 2 * math.pi, 40)
    stroke = cheek + 12 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # points 8 px outside the face outline, outward from the face's centre
    centre = lm[:468, :2].mean(axis=0) * FRAME
    oval = [c.start for c in FaceLandmarksConnections.FACE_LANDMARKS_FACE_OVAL]
    outward = lm[oval, :2] * FRAME - centre
    outside = lm[oval, :2] * FRAME + 8 * outward / np.linalg.norm(outward, axis=1, keepdims=True)
    return base, lm, cheek, stroke, outside


def test_triangles_are_mediapipes_tesselation():
    assert FACE_TRIANGLES.shape == (limits.FACE_TRIANGLE_COUNT, 3)
    assert FACE_TRIANGLES.max() < 468  # never the iris points
    edges = {frozenset((c.start, c.end)) for c in FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION}
    from_triangles = {frozenset((t[i], t[(i + 1) % 3])) for t in FACE_TRIANGLES.tolist() for i in range(3)}
    assert from_triangles == edges
    assert len({frozenset(t) for t in FACE_TRIANGLES.tolist()}) == len(FACE_TRIANGLES)


def test_a_point_on_the_face_gets_its_containing_triangle(drawn):
    _, lm, cheek, _, _ = drawn
    a = anchor(cheek / FRAME, lm)
    assert min(1 - a.u - a.v, a.u, a.v) >= 0
    assert np.allclose(np.asarray(resolve(a, lm)) * FRAME, cheek, atol=1e-9)
    assert anchor(cheek / FRAME, lm[:, :2]) == a  # (N, 2) landmarks: same anchor where the mesh does not fold
    assert json.loads(json.dumps(a)) == [a.triangle, a.u, a.v]


@pytest.mark.parametrize("name", POSES)
def test_mark_follows_a_moved_rotated_scaled_face(drawn, pose, name):
    base, lm, cheek, stroke, _ = drawn
    moved = pose(**POSES[name])
    moved_lm = moved.landmarks()
    a = anchor(cheek / FRAME, lm)
    assert np.linalg.norm(np.asarray(resolve(a, moved_lm)) * FRAME - base.follow(moved, cheek)) < 0.01
    # the whole stroke, through the board and JSON as it travels between pages
    board = AnnotationBoard()
    event = board.apply("doctor", {"op": "add", "shape": {"kind": "freehand", "anchor": "face",
                                                          "points": anchor_points(stroke / FRAME, lm)}})
    stored = json.loads(json.dumps(event))["shape"]["points"]
    got = resolve_points(stored, moved_lm) * FRAME
    assert np.linalg.norm(got - base.follow(moved, stroke), axis=1).max() < 0.05  # only the 5-decimal rounding


@pytest.mark.parametrize("name", POSES)
def test_points_just_outside_the_face_follow_it(drawn, pose, name):
    base, lm, _, _, outside = drawn
    anchors = anchor_points(outside / FRAME, lm)
    least = [min(1 - a.u - a.v, a.u, a.v) for a in anchors]
    assert min(least) < 0 and min(least) >= -limits.MAX_EXTRAPOLATION
    moved = pose(**POSES[name])
    got = resolve_points(anchors, moved.landmarks()) * FRAME
    assert np.linalg.norm(got - base.follow(moved, outside), axis=1).max() < 0.01


def test_landmark_jitter_is_not_magnified_much(drawn, pose):
    """MediaPipe's landmarks jitter by about half a pixel; the marks stay within a few."""
    base, lm, _, stroke, outside = drawn
    moved = pose(**POSES["larger, rotated, moved"])
    on_face, off_face = anchor_points(stroke / FRAME, lm), anchor_points(outside / FRAME, lm)
    for seed in range(5):
        noisy = moved.landmarks(noise_px=0.5, seed=seed)
        on_error = np.linalg.norm(resolve_points(on_face, noisy) * FRAME - base.follow(moved, stroke), axis=1)
        off_error = np.linalg.norm(resolve_points(off_face, noisy) * FRAME - base.follow(moved, outside), axis=1)
        assert on_error.max() < 2.5
        assert off_error.max() < 6.0


def test_a_point_far_from_the_face_is_not_anchored(drawn):
    _, lm, cheek, _, _ = drawn
    with pytest.raises(OffFaceError):
        anchor((0.02, 0.02), lm)
    with pytest.raises(OffFaceError):  # one bad point refuses the whole stroke
        anchor_points([cheek / FRAME, (0.98, 0.98)], lm)


def _barycentric_all(point: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Independent brute force: (smallest weight, interpolated z) per triangle."""
    a, b, c = (lm[FACE_TRIANGLES[:, i]] for i in range(3))
    m = np.stack([b[:, :2] - a[:, :2], c[:, :2] - a[:, :2]], axis=2)  # (T, 2, 2): columns e1, e2
    uv = np.linalg.solve(m, (point - a[:, :2])[..., None])[..., 0]
    u, v = uv[:, 0], uv[:, 1]
    z = a[:, 2] + u * (b[:, 2] - a[:, 2]) + v * (c[:, 2] - a[:, 2])
    return np.minimum(np.minimum(1 - u - v, u), v), z


def test_where_a_turned_face_folds_the_front_surface_is_taken(face_px):
    """Turn the head 50° (yaw): the nose now covers part of the far cheek, so some
    pixels lie in two triangles; a mark there belongs to the visible one."""
    yaw = math.radians(50)
    centre = face_px[:468].mean(axis=0)
    rel = face_px - centre
    turned = np.stack([rel[:, 0] * math.cos(yaw) + rel[:, 2] * math.sin(yaw), rel[:, 1],
                       -rel[:, 0] * math.sin(yaw) + rel[:, 2] * math.cos(yaw)], axis=1) + centre
    lm = turned / 512.0  # normalised as in a 512-pixel-wide image (y and z alike: only ratios matter)
    xs, ys = np.meshgrid(np.linspace(*np.percentile(lm[:468, 0], [5, 95]), 60),
                         np.linspace(*np.percentile(lm[:468, 1], [5, 95]), 60))
    folded = 0
    for point in np.stack([xs.ravel(), ys.ravel()], axis=1):
        least, z = _barycentric_all(point, lm)
        inside = least >= -1e-9
        if inside.sum() < 2 or np.ptp(z[inside]) < 0.01:
            continue
        folded += 1
        assert anchor(point, lm).triangle == np.flatnonzero(inside)[np.argmin(z[inside])]
    assert folded > 10


def test_collapsed_triangles_are_skipped(drawn):
    """A closed eyelid collapses triangles to lines; they must never be chosen."""
    _, lm, cheek, _, _ = drawn
    collapsed = lm.copy()
    t = anchor(cheek / FRAME, lm).triangle
    collapsed[FACE_TRIANGLES[t]] = collapsed[FACE_TRIANGLES[t][0]]
    a = anchor(cheek / FRAME, collapsed)
    corners = collapsed[FACE_TRIANGLES[a.triangle], :2]
    (x1, y1), (x2, y2) = corners[1] - corners[0], corners[2] - corners[0]
    assert abs(x1 * y2 - y1 * x2) > 1e-9
    assert np.allclose(np.asarray(resolve(a, collapsed)) * FRAME, cheek, atol=1e-6)


@pytest.mark.parametrize("bad", [np.zeros((478,)), np.zeros((478, 4)), np.zeros((100, 2))])
def test_landmarks_must_be_a_mesh(bad):
    with pytest.raises(ValueError):
        anchor((0.5, 0.5), bad)
    with pytest.raises(ValueError):
        resolve(FaceAnchor(0, 0.2, 0.2), bad)


def test_many_points_are_anchored_in_blocks(drawn):
    _, lm, cheek, _, _ = drawn
    points = np.repeat([cheek / FRAME], limits.MAX_POINTS_PER_STROKE, axis=0)
    anchors = anchor_points(points, lm)
    assert len(anchors) == limits.MAX_POINTS_PER_STROKE and len(set(anchors)) == 1


def test_the_face_outline_encloses_the_drawn_cheek(drawn):
    """Sanity check of the fixture: the cheek point really is on the face."""
    _, lm, cheek, _, _ = drawn
    oval = np.array([lm[c.start, :2] * FRAME for c in FaceLandmarksConnections.FACE_LANDMARKS_FACE_OVAL], np.float32)
    assert cv2.pointPolygonTest(oval, (float(cheek[0]), float(cheek[1])), True) > 20
