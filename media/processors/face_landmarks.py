"""MediaPipe FaceLandmarker (Tasks API) on numpy BGR frames, results as numpy arrays.

Threading: mediapipe's Python wrapper funnels every call of one landmarker through its
own dispatch thread (one per instance, so separate instances run in parallel), so
concurrent calls do not crash — but a VIDEO-mode
landmarker is stateful (it tracks the face from frame to frame and requires increasing
timestamps), so frames from two streams must never share one. Use one
FaceLandmarkDetector per stream, called from one worker thread; this class keeps
unlocked per-stream state (the last timestamp).
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

from .face_model import resolve_face_model

LANDMARK_COUNT = 478


class Mode(enum.Enum):
    VIDEO = "video"  # consecutive frames of one stream: tracks instead of re-detecting, much cheaper
    IMAGE = "image"  # unrelated stills (captured photos): detects from scratch every call


@dataclass(frozen=True)
class FaceLandmarks:
    """One face. Index meanings are MediaPipe's 478-point face mesh."""

    normalized: np.ndarray  # (478, 3) float32: x / width, y / height, z relative depth in x units (negative = nearer)
    pixels: np.ndarray  # (478, 2) float32: x, y in pixels of the analysed frame
    # (4, 4) canonical face model (cm) -> camera space (x right, y up, z towards the viewer);
    # None unless the detector was created with transform=True.
    transform: np.ndarray | None
    width: int
    height: int


class FaceLandmarkDetector:
    """num_faces=1: a consultation frame has one patient; with several faces MediaPipe
    reports the one it is most confident about."""

    def __init__(self, model_path: str | Path | None = None, *, mode: Mode = Mode.VIDEO, transform: bool = True,
                 min_detection_confidence: float = 0.5, min_presence_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5) -> None:
        options = vision.FaceLandmarkerOptions(
            # model_path goes through the resolver too, so it is checksum-verified like any other source.
            base_options=BaseOptions(model_asset_path=str(resolve_face_model(model_path))),
            running_mode=vision.RunningMode.VIDEO if mode is Mode.VIDEO else vision.RunningMode.IMAGE,
            num_faces=1,
            min_face_detection_confidence=min_detection_confidence,
            min_face_presence_confidence=min_presence_confidence,
            min_tracking_confidence=min_tracking_confidence,
            output_facial_transformation_matrixes=transform,
        )
        self.mode = mode
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_ts_ms = -1

    def detect(self, bgr: np.ndarray, timestamp_ms: int | None = None) -> FaceLandmarks | None:
        """Landmarks of the face in `bgr` (H x W x 3 uint8, BGR order), or None.

        VIDEO mode: `timestamp_ms` is the frame's capture time (default: the monotonic
        clock). MediaPipe rejects non-increasing timestamps, and decoded streams can
        repeat or step back one (source switch, restart), so those are nudged forward
        by 1 ms; the tracker only sees a slightly wrong frame interval.
        """
        if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 BGR frame, got {bgr.dtype} {bgr.shape}")
        # MediaPipe wants RGB; cvtColor also returns a contiguous array, which mp.Image needs
        # (it copies from the raw buffer, so a strided view such as a crop would be garbled).
        image = mp.Image(mp.ImageFormat.SRGB, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if self.mode is Mode.VIDEO:
            ts = time.monotonic_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
            self._last_ts_ms = max(ts, self._last_ts_ms + 1)
            result = self._landmarker.detect_for_video(image, self._last_ts_ms)
        else:
            if timestamp_ms is not None:
                raise ValueError("IMAGE mode takes no timestamp")
            result = self._landmarker.detect(image)
        if not result.face_landmarks:
            return None
        height, width = bgr.shape[:2]
        normalized = np.array([(p.x, p.y, p.z) for p in result.face_landmarks[0]], dtype=np.float32)
        pixels = normalized[:, :2] * np.array([width, height], dtype=np.float32)
        matrices = result.facial_transformation_matrixes
        transform = np.asarray(matrices[0], dtype=np.float32) if matrices else None
        return FaceLandmarks(normalized, pixels, transform, width, height)

    def close(self) -> None:
        self._landmarker.close()

    def __enter__(self) -> FaceLandmarkDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
