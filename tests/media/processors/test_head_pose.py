"""Head pose signs: positive yaw/roll = towards the patient's left, positive pitch = chin up.

Roll is checked exactly (in-plane rotation is roll). Yaw and pitch are out of plane,
so they are checked on approximations (see warps.py): direction and monotonicity, not
magnitude.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from media.processors.face_landmarks import FaceLandmarkDetector, FaceLandmarks
from media.processors.head_pose import HeadPose, head_pose

from .warps import rotate_face_mesh, rotate_in_plane, squeeze


def _rot(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (45, 0, 0), (-45, 0, 0), (0, 20, 0), (0, 0, -15), (30, -10, 8)])
def test_angles_round_trip_through_the_documented_decomposition(yaw: float, pitch: float, roll: float):
    m = np.eye(4)
    m[:3, :3] = _rot("y", yaw) @ _rot("x", -pitch) @ _rot("z", -roll)
    pose = head_pose(m)
    assert (pose.yaw_deg, pose.pitch_deg, pose.roll_deg) == pytest.approx((yaw, pitch, roll), abs=1e-9)


def test_signs_in_camera_space():
    # Camera space: x right, y up, z towards the viewer; the face looks along its own +z.
    turned_to_image_right = np.eye(4)
    turned_to_image_right[:3, :3] = _rot("y", 20)  # nose towards +x: the patient's left
    assert head_pose(turned_to_image_right).yaw_deg > 0
    looking_up = np.eye(4)
    looking_up[:3, :3] = _rot("x", -20)  # nose towards +y
    assert head_pose(looking_up).pitch_deg > 0
    ccw_on_screen = np.eye(4)
    ccw_on_screen[:3, :3] = _rot("z", 20)  # top of the head to image left: the patient's right shoulder
    assert head_pose(ccw_on_screen).roll_deg < 0


def _pose(detector: FaceLandmarkDetector, bgr: np.ndarray) -> HeadPose:
    lm = detector.detect(bgr)
    assert lm is not None
    assert lm.transform is not None
    return head_pose(lm.transform)


@pytest.fixture(scope="module")
def base(stills: FaceLandmarkDetector, face_bgr: np.ndarray) -> HeadPose:
    pose = _pose(stills, face_bgr)
    # The portrait faces the camera; MediaPipe reads it about 6 degrees chin-down.
    assert abs(pose.yaw_deg) < 5 and abs(pose.roll_deg) < 6 and -12 < pose.pitch_deg < 3
    return pose


@pytest.mark.parametrize("ccw", [-20, -10, 10, 20])
def test_in_plane_rotation_is_roll_with_the_documented_sign(stills, face_bgr, base, ccw: float):
    pose = _pose(stills, rotate_in_plane(face_bgr, ccw))
    assert pose.roll_deg - base.roll_deg == pytest.approx(-ccw, abs=4)  # CCW on screen = patient's right shoulder
    assert abs(pose.yaw_deg - base.yaw_deg) < 4 and abs(pose.pitch_deg - base.pitch_deg) < 4


def test_mirroring_negates_yaw_and_roll(stills, face_bgr):
    tilted = rotate_in_plane(face_bgr, 15)
    pose, mirrored = _pose(stills, tilted), _pose(stills, np.ascontiguousarray(tilted[:, ::-1]))
    assert mirrored.roll_deg == pytest.approx(-pose.roll_deg, abs=3)
    assert mirrored.yaw_deg == pytest.approx(-pose.yaw_deg, abs=3)
    assert mirrored.pitch_deg == pytest.approx(pose.pitch_deg, abs=3)


def test_a_sideways_squeeze_moves_yaw_the_right_way(stills, face_bgr, face_landmarks: FaceLandmarks, base):
    # Nose slid towards image right, outline fixed: looks like a turn to the patient's left.
    left = _pose(stills, squeeze(face_bgr, face_landmarks, 0.3)).yaw_deg - base.yaw_deg
    right = _pose(stills, squeeze(face_bgr, face_landmarks, -0.3)).yaw_deg - base.yaw_deg
    assert left > 2 and right < -2


def test_a_rotated_face_mesh_moves_yaw_monotonically(stills, face_bgr, face_landmarks, base):
    applied = [-30, -15, 15, 30]
    yaws = [_pose(stills, rotate_face_mesh(face_bgr, face_landmarks, yaw_deg=a)).yaw_deg - base.yaw_deg
            for a in applied]
    assert yaws == sorted(yaws)
    assert yaws[0] < -10 and yaws[1] < -4 and yaws[2] > 4 and yaws[3] > 10  # about half the applied angle


def test_a_rotated_face_mesh_moves_pitch_monotonically(stills, face_bgr, face_landmarks, base):
    down = _pose(stills, rotate_face_mesh(face_bgr, face_landmarks, pitch_deg=-20))
    up = _pose(stills, rotate_face_mesh(face_bgr, face_landmarks, pitch_deg=20))
    assert down.pitch_deg - base.pitch_deg < -10 and up.pitch_deg - base.pitch_deg > 10
    assert abs(up.yaw_deg - base.yaw_deg) < 4 and abs(down.yaw_deg - base.yaw_deg) < 4
