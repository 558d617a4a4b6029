"""Head pose (yaw, pitch, roll) from MediaPipe's facial transformation matrix.

Why the matrix and not solvePnP: MediaPipe's geometry pipeline already fits its
canonical 3D face to all 478 landmarks (weighted Procrustes), which is steadier than
PnP on a handful of points, and PnP needs camera intrinsics we do not know for the
patient's phone — a guessed focal length biases the angles.

Conventions, for a frame as the camera sees it (not mirrored — WebRTC sends the
unmirrored image even when the phone's preview is mirrored), angles relative to the
camera's optical axis, all "positive = towards the patient's own left":

- yaw   > 0: the patient turns their head to their left (nose moves to image right);
- pitch > 0: chin up (the patient looks up);
- roll  > 0: head tilted towards the patient's left shoulder (clockwise on screen).

Angles are of the decomposition R = Ry(yaw) Rx(-pitch) Rz(-roll) in the camera frame
(x right, y up, z towards the viewer), so yaw and pitch are exactly the direction
the nose points in and roll is the remaining in-plane tilt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HeadPose:
    yaw_deg: float
    pitch_deg: float
    roll_deg: float


def head_pose(transform: np.ndarray) -> HeadPose:
    """Pose from a (4, 4) facial transformation matrix (canonical face -> camera)."""
    r = np.asarray(transform, dtype=np.float64)[:3, :3]
    # r @ (0, 0, 1) is the direction the face looks in: (cos p sin y, sin p, cos p cos y).
    yaw = math.atan2(r[0, 2], r[2, 2])
    pitch = math.asin(max(-1.0, min(1.0, r[1, 2])))
    roll = -math.atan2(r[1, 0], r[1, 1])
    return HeadPose(math.degrees(yaw), math.degrees(pitch), math.degrees(roll))
