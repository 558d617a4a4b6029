"""A real face photograph (matplotlib's sample data) and one IMAGE-mode detector per session."""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import matplotlib.cbook
import numpy as np
import pytest

from media.processors.face_landmarks import FaceLandmarkDetector, FaceLandmarks, Mode


@pytest.fixture(scope="session")
def face_bgr() -> np.ndarray:
    """Grace Hopper's portrait, 512 x 600, BGR."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path))
    assert bgr is not None, path
    return bgr


@pytest.fixture(scope="session")
def stills() -> Iterator[FaceLandmarkDetector]:
    with FaceLandmarkDetector(mode=Mode.IMAGE) as detector:
        yield detector


@pytest.fixture(scope="session")
def face_landmarks(stills: FaceLandmarkDetector, face_bgr: np.ndarray) -> FaceLandmarks:
    landmarks = stills.detect(face_bgr)
    assert landmarks is not None
    return landmarks
