"""Skin regions of the face (forehead, cheeks, nose, chin) as masks, from face-mesh landmarks.

Left and right are the patient's own. Frames are as the camera sees them (unmirrored,
as WebRTC delivers them), so the patient's left cheek is on the image's right — the
same convention as MediaPipe's LEFT_EYE (landmarks 263, 362, ... on the image right)
and head_pose.py.

Each region is a polygon through MediaPipe face-mesh landmark indices (0..467, never
the iris points), chosen on the symmetric canonical mesh: the two cheeks are exact
mirror images and forehead, nose and chin are symmetric. The polygons already keep
clear of the eyes, brows and lips; those features are also cut out explicitly, with a
margin, because landmark jitter or an expression can push a polygon edge onto them,
and one eyelash line or lip edge would dominate the spot and texture measures.

Pose: polygons follow the mesh, so they stay on the same skin as the head turns. What
they cannot do is see round a corner: skin turned away from the camera is foreshortened
and, near the silhouette, unreliable. Mesh triangles seen at a grazing angle are cut
out of the masks (MIN_FACING), and `facing` reports how squarely each region faces the
camera so a reader can discount an oblique one.
"""

from __future__ import annotations

import cv2
import numpy as np
from mediapipe.tasks.python.vision import FaceLandmarksConnections

# The patient's right cheek: infraorbital rim (117-119) down the nose side (100, 142),
# along the nasolabial fold (203, 206, 216) and back up over the cheekbone (207-116).
_RIGHT_CHEEK = (117, 118, 119, 100, 142, 203, 206, 216, 207, 187, 147, 123, 116)
# Mirror partners on the canonical mesh (x -> -x), listed in the same order.
_LEFT_CHEEK = (346, 347, 348, 329, 371, 423, 426, 436, 427, 411, 376, 352, 345)

# A vertex is a landmark index, or (i, j, t): the point t of the way from landmark i to j.
Vertex = int | tuple[int, int, float]
_BELOW_HAIRLINE = 0.35  # the face oval's top runs along the hairline (and hat brims, fringes): start lower

REGIONS: dict[str, tuple[Vertex, ...]] = {
    # From a line a third of the way down from the face oval's upper arc (103 .. 332)
    # towards the next row of landmarks, down to the top of the brows and the glabella (9).
    "forehead": tuple((i, j, _BELOW_HAIRLINE) for i, j in ((103, 104), (67, 69), (109, 108), (10, 151), (338, 337),
                                                            (297, 299), (332, 333)))
                + (333, 334, 296, 336, 9, 107, 66, 105, 104),
    "left_cheek": _LEFT_CHEEK,
    "right_cheek": _RIGHT_CHEEK,
    # Dorsum from the root (168) to the tip (1), widening over the tip; stops above the
    # nostrils and the alar creases, whose shadows would read as dark spots.
    "nose": (168, 417, 351, 419, 248, 281, 363, 275, 1, 45, 134, 51, 3, 196, 122, 193),
    # Below the lower lip's crease (83, 18, 313) to just above the jaw line (140 .. 369).
    "chin": (182, 83, 18, 313, 406, 418, 262, 369, 396, 175, 171, 140, 32, 194),
}
REGION_NAMES = tuple(REGIONS)


def _indices(*connection_sets: list) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(sorted({c.start for c in s} | {c.end for c in s})) for s in connection_sets)


_C = FaceLandmarksConnections
EXCLUDED_FEATURES = _indices(_C.FACE_LANDMARKS_LEFT_EYE, _C.FACE_LANDMARKS_RIGHT_EYE, _C.FACE_LANDMARKS_LEFT_EYEBROW,
                             _C.FACE_LANDMARKS_RIGHT_EYEBROW, _C.FACE_LANDMARKS_LIPS)


def _triangles() -> np.ndarray:
    """The mesh's triangles: its tesselation lists each as three consecutive edges."""
    edges = _C.FACE_LANDMARKS_TESSELATION
    return np.array([(edges[k].start, edges[k + 1].start, edges[k + 2].start) for k in range(0, len(edges), 3)])


TRIANGLES = _triangles()
# |cos| of the angle between a triangle's normal and the viewing axis below which it is
# cut out: 0.3 is ~73 degrees, where a few pixels span a centimetre of skin.
MIN_FACING = 0.3
_SHIFT = 4  # fillPoly sub-pixel bits: masks at small working scales keep their true outline


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(points * (1 << _SHIFT)).astype(np.int32)


def _fill(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for p in polygons:  # one call each: fillPoly with several polygons fills their overlaps even-odd (as holes)
        cv2.fillPoly(mask, [_fixed(p)], 1, cv2.LINE_8, _SHIFT)
    return mask


def triangle_facing(points3d: np.ndarray) -> np.ndarray:
    """|cos| of each mesh triangle's normal with the viewing axis, from (N, 3) points in
    one isotropic unit (pixels, with depth in pixels too). Unsigned: the tesselation's
    winding is not consistent, and in a moderate pose nothing visible is back-facing."""
    a, b, c = (points3d[TRIANGLES[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    return np.abs(n[:, 2]) / np.maximum(norm, 1e-12)


def vertices(points: np.ndarray, name: str) -> np.ndarray:
    """The region's polygon from landmark positions (N, D) -> (K, D)."""
    out = []
    for v in REGIONS[name]:
        if isinstance(v, tuple):
            i, j, t = v
            out.append(points[i] + t * (points[j] - points[i]))
        else:
            out.append(points[v])
    return np.array(out, np.float64)


def region_facing(points3d: np.ndarray, name: str) -> float:
    """How squarely a region faces the camera: |cos| of the angle between its mean
    normal (the polygon's vector area, Newell's method) and the viewing axis. Cheeks
    face somewhat sideways even in a frontal photo (~0.8); it falls as the head turns."""
    p = vertices(points3d, name)
    area = 0.5 * np.cross(p, np.roll(p, -1, axis=0)).sum(axis=0)
    return float(abs(area[2]) / max(np.linalg.norm(area), 1e-12))


def region_masks(points: np.ndarray, shape: tuple[int, int], *, depth: np.ndarray | None = None,
                 margin_px: float = 0.0) -> dict[str, np.ndarray]:
    """Boolean masks of `shape` (H, W) for every region.

    points: (>= 468, 2) landmark positions in the target image's pixels.
    depth: (>= 468,) landmark depth in the same pixel unit (MediaPipe's z times the frame
        width, scaled like `points`); when given, grazing triangles are cut out.
    margin_px: clearance kept from the eyes, brows and lips.
    """
    points = np.asarray(points, np.float64)[:, :2]
    masks = {name: _fill(shape, [vertices(points, name)]) for name in REGIONS}

    hulls = [cv2.convexHull(points[list(f)].astype(np.float32)).reshape(-1, 2) for f in EXCLUDED_FEATURES]
    excluded = _fill(shape, hulls)
    if margin_px > 0:
        r = int(np.ceil(margin_px))
        excluded = cv2.dilate(excluded, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    if depth is not None:
        points3d = np.column_stack([points, np.asarray(depth, np.float64)])
        oblique = TRIANGLES[triangle_facing(points3d) < MIN_FACING]
        if len(oblique):
            excluded |= _fill(shape, [points[t] for t in oblique])

    # Pixels claimed by two regions (only possible in an extreme pose, where polygons
    # fold over each other) belong to neither: a measure must describe one place.
    claims = sum(masks.values())
    keep = (excluded == 0) & (claims == 1)
    return {name: (m == 1) & keep for name, m in masks.items()}
