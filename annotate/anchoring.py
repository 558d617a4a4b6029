"""Face anchoring: a point stored relative to the face mesh, so a mark drawn on the
left cheek stays on the left cheek when the patient moves, turns or leans in.

A face anchor is (t, u, v): triangle t of the mesh and the point A + u·(B − A) + v·(C − A)
of its corners A, B, C, i.e. barycentric weights (1 − u − v, u, v). Barycentric
coordinates are invariant under any affine map, so the point follows translation,
rotation and scale exactly, and each triangle follows local deformation (a smile).
Because they are affine-invariant, working in normalised image coordinates (x / width,
y / height, as MediaPipe reports them) gives the same anchors as pixels.

The triangles are MediaPipe's own face-mesh tesselation (FACE_LANDMARKS_TESSELATION
lists each triangle as three consecutive edges a→b, b→c, c→a; triangle k is edges
3k..3k+2), not a Delaunay triangulation of a canonical landmark set, because:
- it is the mesh's anatomical topology: the open mouth and the eyes are holes, so a
  cheek mark is never tied to a triangle spanning the lips that stretches as the
  patient talks; a Delaunay triangulation fills those holes;
- it uses landmarks 0..467 only, never the 10 iris points that move with the gaze;
- it is fixed data, identical in MediaPipe's JavaScript FaceLandmarker that the pages
  use (the same three-edges rule gives the same indices), with no tie-breaking between
  co-circular points that two Delaunay implementations could resolve differently;
- the indices are the same in every frame by construction.
Pages anchor with the same table: FACE_TRIANGLES.tolist() served by the server (one
source of truth), or derived from tasks-vision's FACE_LANDMARKS_TESSELATION by the rule
above.

The triangle for a point is the one in which it is least extrapolated: the largest
smallest barycentric weight. That is the containing triangle when there is one
(several may contain it where the mesh folds over itself in a turned face: with
(N, 3) landmarks the front-most is taken, MediaPipe's z growing away from the camera),
and otherwise the triangle needing the least extrapolation, which is what keeps
landmark jitter from being magnified for points just outside the face outline.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from mediapipe.tasks.python.vision import FaceLandmarksConnections
from numpy.typing import ArrayLike

from annotate import limits

MESH_LANDMARKS = 468  # the tesselation's landmarks; FaceLandmarker adds 10 iris points
_INSIDE = -1e-9       # a point on an edge is inside despite rounding
_DEGENERATE = 1e-12   # |2·area| below this (normalised units): a collapsed triangle, e.g. a closed eyelid
_CHUNK = 256          # points per vectorised block: bounds memory to ~256 × 852 per array


def _tesselation_triangles() -> np.ndarray:
    edges = FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION
    triangles = []
    for k in range(0, len(edges), 3):
        a, b, c = edges[k:k + 3]
        if not (a.end == b.start and b.end == c.start and c.end == a.start):
            raise RuntimeError(f"mediapipe's tesselation edges {k}..{k + 2} do not form a triangle")
        triangles.append((a.start, b.start, c.start))
    return np.array(triangles, dtype=np.intp)


FACE_TRIANGLES = _tesselation_triangles()
# Stored anchors name triangles by index: a different mesh would silently move every mark.
if len(FACE_TRIANGLES) != limits.FACE_TRIANGLE_COUNT:
    raise RuntimeError(f"mediapipe's face mesh has {len(FACE_TRIANGLES)} triangles, "
                       f"annotations are defined on {limits.FACE_TRIANGLE_COUNT}")


class FaceAnchor(NamedTuple):
    """A tuple, so it serialises as the protocol's [t, u, v] as it is."""
    triangle: int
    u: float
    v: float


class OffFaceError(ValueError):
    """The point is too far from the face to follow it; keep it in screen coordinates."""


def _landmarks(landmarks: ArrayLike) -> np.ndarray:
    array = np.asarray(landmarks, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] not in (2, 3) or array.shape[0] < MESH_LANDMARKS:
        raise ValueError(f"landmarks must be an (N, 2) or (N, 3) array with N >= {MESH_LANDMARKS}, got {array.shape}")
    return array


def anchor_points(points: ArrayLike, landmarks: ArrayLike) -> list[FaceAnchor]:
    """Anchors for normalised (x, y) points, e.g. every point of a stroke; OffFaceError
    if any point lies further than limits.MAX_EXTRAPOLATION outside every triangle."""
    lm = _landmarks(landmarks)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    corners = lm[FACE_TRIANGLES]                       # (T, 3, 2 or 3)
    a = corners[:, 0, :2]
    e1 = corners[:, 1, :2] - a
    e2 = corners[:, 2, :2] - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    usable = np.abs(det) > _DEGENERATE
    det = np.where(usable, det, 1.0)
    anchors: list[FaceAnchor] = []
    for start in range(0, len(pts), _CHUNK):
        d = pts[start:start + _CHUNK, None, :] - a      # (M, T, 2)
        u = (d[..., 0] * e2[:, 1] - d[..., 1] * e2[:, 0]) / det
        v = (e1[:, 0] * d[..., 1] - e1[:, 1] * d[..., 0]) / det
        least = np.where(usable, np.minimum(np.minimum(1.0 - u - v, u), v), -np.inf)
        choice = np.argmax(least, axis=1)
        if lm.shape[1] == 3:
            z = corners[:, 0, 2] + u * (corners[:, 1, 2] - corners[:, 0, 2]) + v * (corners[:, 2, 2] - corners[:, 0, 2])
            inside = least >= _INSIDE
            front = np.argmin(np.where(inside, z, np.inf), axis=1)
            choice = np.where(inside.any(axis=1), front, choice)
        rows = np.arange(len(choice))
        if (least[rows, choice] < -limits.MAX_EXTRAPOLATION).any():
            raise OffFaceError("a point lies too far outside the face to be anchored to it")
        anchors += [FaceAnchor(int(t), float(uu), float(vv))
                    for t, uu, vv in zip(choice, u[rows, choice], v[rows, choice])]
    return anchors


def anchor(point: ArrayLike, landmarks: ArrayLike) -> FaceAnchor:
    # a batch of one: asarray(point)[None] is what asarray([point]) would give
    return anchor_points(np.asarray(point, dtype=np.float64)[np.newaxis], landmarks)[0]


def resolve_points(anchors: ArrayLike, landmarks: ArrayLike) -> np.ndarray:
    """(M, 2) normalised points for anchors given as FaceAnchors or [t, u, v] lists."""
    lm = _landmarks(landmarks)[:, :2]
    table = np.asarray(anchors, dtype=np.float64).reshape(-1, 3)
    corners = lm[FACE_TRIANGLES[table[:, 0].astype(np.intp)]]  # (M, 3, 2)
    u, v = table[:, 1:2], table[:, 2:3]
    return corners[:, 0] + u * (corners[:, 1] - corners[:, 0]) + v * (corners[:, 2] - corners[:, 0])


def resolve(anchor: FaceAnchor, landmarks: ArrayLike) -> tuple[float, float]:
    x, y = resolve_points([anchor], landmarks)[0]
    return float(x), float(y)
