"""Synthetic pose changes of a real face photograph.

In-plane rotation is exact (it is roll). Yaw and pitch are out of plane, which no 2D
image warp reproduces: the far cheek would have to disappear, the near one appear.
Two approximations, both honest about that:

- `squeeze`: a horizontal remap that slides the middle of the face sideways while its
  outline stays put, as the nose does when a head turns; small effect (a few degrees).
- `rotate_face_mesh`: rotates the landmarks' own 3D mesh (MediaPipe gives a depth per
  landmark) and warps the photo triangle by triangle onto the rotated positions. Hair,
  ears and background stay put and nothing is occluded, so the estimate moves by
  roughly half the applied angle — enough to check signs and monotonicity.
"""

from __future__ import annotations

import cv2
import numpy as np

from media.processors.face_landmarks import FaceLandmarks


def rotate_in_plane(bgr: np.ndarray, degrees_ccw: float) -> np.ndarray:
    """Counter-clockwise on screen for positive angles (cv2's convention)."""
    h, w = bgr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees_ccw, 1.0)
    return cv2.warpAffine(bgr, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def squeeze(bgr: np.ndarray, landmarks: FaceLandmarks, shift: float) -> np.ndarray:
    """Slide the face's middle by `shift` half-face-widths (> 0: towards image right)."""
    h, w = bgr.shape[:2]
    xs = landmarks.pixels[:, 0]
    centre, half = float(xs.mean()), float(xs.max() - xs.min()) / 2
    x = np.arange(w, dtype=np.float32)
    u = (x - centre) / (1.6 * half)  # bump reaching a bit past the face outline
    bump = np.clip(1 - u * u, 0, 1)
    # Each output pixel samples from further left, so the content moves right.
    map_x = np.broadcast_to(x - shift * half * bump, (h, w)).astype(np.float32)
    map_y = np.broadcast_to(np.arange(h, dtype=np.float32)[:, None], (h, w)).astype(np.float32)
    return cv2.remap(bgr, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def rotate_face_mesh(bgr: np.ndarray, landmarks: FaceLandmarks, yaw_deg: float = 0.0,
                     pitch_deg: float = 0.0) -> np.ndarray:
    """Warp the face as if the head turned by yaw_deg / pitch_deg (head_pose.py signs:
    yaw > 0 patient's left, nose to image right; pitch > 0 chin up, nose up)."""
    h, w = bgr.shape[:2]
    # Image axes: x right, y down, z away from the camera (MediaPipe: nearer = more negative z).
    src = np.column_stack([landmarks.pixels, landmarks.normalized[:, 2] * w]).astype(np.float64)
    p = src - src.mean(axis=0)
    ty, tp = np.radians(yaw_deg), np.radians(pitch_deg)
    x = p[:, 0] * np.cos(ty) - p[:, 2] * np.sin(ty)  # yaw > 0 moves the nose (z < 0) to +x
    z = p[:, 0] * np.sin(ty) + p[:, 2] * np.cos(ty)
    y = p[:, 1] * np.cos(tp) + z * np.sin(tp)  # pitch > 0 moves the nose up (-y)
    dst = np.column_stack([x, y]) + src.mean(axis=0)[:2]

    # Pinned frame border points, so the warp fades out between the face and the edges.
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1],
                        [w / 2, 0], [w / 2, h - 1], [0, h / 2], [w - 1, h / 2]])
    src2 = np.vstack([src[:, :2], corners]).astype(np.float32)
    dst2 = np.clip(np.vstack([dst, corners]), 0, [w - 1, h - 1]).astype(np.float32)
    subdiv = cv2.Subdiv2D((0, 0, w, h))
    index = {}
    for i, (px, py) in enumerate(dst2):
        subdiv.insert((float(px), float(py)))
        index[(float(px), float(py))] = i
    out = bgr.copy()
    for tri in subdiv.getTriangleList().reshape(-1, 3, 2):
        ids = [index.get((float(px), float(py))) for px, py in tri]
        if None in ids:  # a triangle on Subdiv2D's virtual outer vertices
            continue
        d, s = dst2[ids], src2[ids]
        x0, y0, bw, bh = cv2.boundingRect(d)
        if bw == 0 or bh == 0:
            continue
        affine = cv2.getAffineTransform((d - (x0, y0)).astype(np.float32), s)  # output box -> source photo
        patch = cv2.warpAffine(bgr, affine, (bw, bh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
        mask = np.zeros((bh, bw), np.uint8)
        cv2.fillConvexPoly(mask, np.round(d - (x0, y0)).astype(np.int32), 1)
        region = out[y0:y0 + bh, x0:x0 + bw]
        keep = mask[:region.shape[0], :region.shape[1]].astype(bool)
        region[keep] = patch[:region.shape[0], :region.shape[1]][keep]
    return out
