"""One frame in, every metric the guidance needs out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .face_landmarks import FaceLandmarks
from .framing import Framing, framing
from .head_pose import HeadPose, head_pose
from .image_quality import ColourCast, Exposure, colour_cast, exposure, face_patch, sharpness


@dataclass(frozen=True)
class FaceMetrics:
    landmarks: FaceLandmarks
    pose: HeadPose
    framing: Framing
    sharpness: float
    exposure: Exposure


@dataclass(frozen=True)
class FrameMetrics:
    face: FaceMetrics | None  # None: no face found
    cast: ColourCast  # whole frame, so available without a face


def analyze_frame(bgr: np.ndarray, landmarks: FaceLandmarks | None) -> FrameMetrics:
    """Metrics of `bgr` (BGR uint8) given the landmarks a FaceLandmarkDetector found in it."""
    cast = colour_cast(bgr)
    if landmarks is None:
        return FrameMetrics(None, cast)
    if landmarks.transform is None:
        raise ValueError("head pose needs the transformation matrix: create the detector with transform=True")
    patch = face_patch(bgr, landmarks)
    face = FaceMetrics(landmarks, head_pose(landmarks.transform), framing(landmarks), sharpness(patch), exposure(patch))
    return FrameMetrics(face, cast)
