"""FaceLandmarker wrapper: a real face is found, nothing is found where there is none."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.synthetic_video import PORTRAIT_FRAME_INTERVAL_MS, portrait_frames
from media.processors.analysis import analyze_frame
from media.processors.face_landmarks import LANDMARK_COUNT, FaceLandmarkDetector, FaceLandmarks, Mode

# MediaPipe face mesh indices: nose tip, outer eye corners (image left / right), chin, upper lip.
NOSE_TIP, EYE_IMAGE_LEFT, EYE_IMAGE_RIGHT, CHIN, UPPER_LIP = 1, 33, 263, 152, 13


def test_a_real_face_is_found_with_a_plausible_mesh(face_landmarks: FaceLandmarks, face_bgr: np.ndarray):
    lm = face_landmarks
    assert lm.normalized.shape == (LANDMARK_COUNT, 3) and lm.pixels.shape == (LANDMARK_COUNT, 2)
    assert (lm.width, lm.height) == (face_bgr.shape[1], face_bgr.shape[0])
    np.testing.assert_allclose(lm.pixels, lm.normalized[:, :2] * (lm.width, lm.height), rtol=1e-6)
    p = lm.pixels
    assert p[EYE_IMAGE_LEFT, 0] < p[NOSE_TIP, 0] < p[EYE_IMAGE_RIGHT, 0]
    assert p[EYE_IMAGE_LEFT, 1] < p[NOSE_TIP, 1] < p[UPPER_LIP, 1] < p[CHIN, 1]
    # The portrait's face: roughly centred horizontally, upper half of the photo.
    assert 200 < p[NOSE_TIP, 0] < 320 and 150 < p[NOSE_TIP, 1] < 300
    assert lm.transform is not None and lm.transform.shape == (4, 4)
    np.testing.assert_allclose(lm.transform[:3, :3] @ lm.transform[:3, :3].T, np.eye(3), atol=1e-3)  # a rotation
    assert lm.transform[2, 3] < 0  # in front of the camera (z towards the viewer)


@pytest.mark.parametrize("frame", [
    np.zeros((480, 640, 3), np.uint8),
    np.full((480, 640, 3), 128, np.uint8),
    np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8),
], ids=["black", "grey", "noise"])
def test_no_face_on_blank_or_noise(stills: FaceLandmarkDetector, frame: np.ndarray):
    assert stills.detect(frame) is None


def test_a_strided_crop_gives_the_same_result_as_a_copy(stills: FaceLandmarkDetector, face_bgr: np.ndarray):
    view = face_bgr[50:550, 20:500]
    assert not view.flags.c_contiguous
    a, b = stills.detect(view), stills.detect(view.copy())
    assert a is not None and b is not None
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-3)


def test_bad_input_is_rejected(stills: FaceLandmarkDetector, face_bgr: np.ndarray):
    with pytest.raises(ValueError, match="uint8"):
        stills.detect(face_bgr.astype(np.float32))
    with pytest.raises(ValueError, match="uint8"):
        stills.detect(face_bgr[:, :, 0])
    with pytest.raises(ValueError, match="timestamp"):
        stills.detect(face_bgr, timestamp_ms=5)


def test_video_mode_tracks_and_tolerates_repeated_or_backward_timestamps():
    frames = portrait_frames(count=12)
    step = PORTRAIT_FRAME_INTERVAL_MS
    with FaceLandmarkDetector(mode=Mode.VIDEO) as video:
        timestamps = [i * step for i in range(10)] + [9 * step, 0]  # repeat, then a restart
        results = [video.detect(bgr, timestamp_ms=ts) for bgr, ts in zip(frames, timestamps)]
        assert all(r is not None for r in results)
        assert video.detect(frames[0]) is not None  # default clock
        assert video.detect(np.zeros((480, 640, 3), np.uint8)) is None


def test_without_the_matrix_there_is_no_transform_and_no_pose(face_bgr: np.ndarray):
    with FaceLandmarkDetector(mode=Mode.IMAGE, transform=False) as detector:
        lm = detector.detect(face_bgr)
    assert lm is not None and lm.transform is None
    with pytest.raises(ValueError, match="transform=True"):
        analyze_frame(face_bgr, lm)
