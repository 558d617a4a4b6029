"""The face-analysis processor: guidance for the patient, metrics for the clinicians,
and guided capture of standard clinical photos.

Runs in its own worker (media.processing) on the patient's decoded video at up to
10 fps. The patient is told one steady prompt at a time ("lift your chin a
little"), sent only when it changes; doctor and expert get pose, framing,
quality and the landmark mesh (for the overlay they can toggle) at 5 Hz.

Capture: the doctor starts a protocol (default frontal, left 45, right 45). The
guidance then steers towards each pose in turn; when the patient has held it
within tolerance for a few sharp frames, the full-resolution frame is kept for
the record (JPEG via context.keep) and a thumbnail goes to the clinicians.
"""

from __future__ import annotations

import base64
import dataclasses
from collections import deque
from typing import Optional

import cv2
import numpy as np

from ..processing import DecodedInput, ProcessorContext
from .analysis import FrameMetrics, analyze_frame
from .face_landmarks import FaceLandmarkDetector, Mode
from .guidance import Guidance, TargetPose
from .observations import observe_skin
from .prompts import Prompt

MAX_WIDTH = 640  # landmarks are as good at 640 px and cost less
METRICS_INTERVAL_S = 0.2
CLINICIANS = {"doctor", "expert"}
POSES = {"frontal": TargetPose.FRONTAL, "left45": TargetPose.LEFT_45, "right45": TargetPose.RIGHT_45}
DEFAULT_PROTOCOL = ("frontal", "left45", "right45")
# Wider than the guidance's 5 degrees: a still within 8 degrees is clinically
# comparable, and the landmark model reads a level head a few degrees off in pitch.
DEFAULT_CAPTURE_TOLERANCE_DEG = 8.0
THUMBNAIL_WIDTH = 160
JPEG_QUALITY = 95


def _round(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def metrics_message(metrics: FrameMetrics) -> dict:
    cast = {"a": _round(metrics.cast.a), "b": _round(metrics.cast.b), "chroma": _round(metrics.cast.chroma)}
    face = metrics.face
    if face is None:
        return {"kind": "face-metrics", "face": None, "cast": cast}
    points = np.round(face.landmarks.normalized[:, :2], 4).tolist()
    return {
        "kind": "face-metrics",
        "face": {
            "pose": {"yaw": _round(face.pose.yaw_deg, 1), "pitch": _round(face.pose.pitch_deg, 1),
                     "roll": _round(face.pose.roll_deg, 1)},
            "framing": {"height": _round(face.framing.height_frac, 3), "offset_x": _round(face.framing.offset_x, 3),
                        "offset_y": _round(face.framing.offset_y, 3)},
            "sharpness": _round(face.sharpness, 1),
            "exposure": {"p05": _round(face.exposure.p05, 1), "p50": _round(face.exposure.p50, 1),
                         "p95": _round(face.exposure.p95, 1), "clipped": _round(face.exposure.clipped, 3)},
            "landmarks": points,
        },
        "cast": cast,
    }


class FaceAnalysisProcessor:
    name = "face-analysis"
    wants = DecodedInput(role="patient", fps=10)
    language = "en"

    @classmethod
    def in_language(cls, language: str | None) -> type["FaceAnalysisProcessor"]:
        """This processor class with the patient's prompts in `language` (i18n.LOCALES; None: English)."""
        return type(cls.__name__, (cls,), {"language": language or cls.language})

    def start(self, context: ProcessorContext) -> None:
        self._context = context
        self._detector = FaceLandmarkDetector(mode=Mode.VIDEO)
        self.guidance = Guidance(language=self.language)
        self._last_prompt: Optional[Prompt] = None
        self._last_metrics_at = float("-inf")
        self._poses: deque[str] = deque()
        self._tolerance = DEFAULT_CAPTURE_TOLERANCE_DEG

    def command(self, command: dict) -> None:
        """{"capture": [pose, ...], "tolerance_deg": 8} starts a protocol; {"capture": None} stops it."""
        poses = command.get("capture")
        if poses is None:
            if self._poses:
                self._poses.clear()
                self._end_capture("stopped")
            return
        self._poses = deque(poses or DEFAULT_PROTOCOL)
        self._tolerance = float(command.get("tolerance_deg", DEFAULT_CAPTURE_TOLERANCE_DEG))
        self.guidance.target = POSES[self._poses[0]]
        self._context.emit({"kind": "capture", "state": "started", "pose": self._poses[0],
                            "remaining": list(self._poses)})

    def _end_capture(self, state: str) -> None:
        self.guidance.target = TargetPose.FRONTAL
        self._context.emit({"kind": "capture", "state": state, "pose": None, "remaining": []})

    def process(self, image: np.ndarray, timestamp: float) -> None:
        full = image
        if image.shape[1] > MAX_WIDTH:
            height = round(image.shape[0] * MAX_WIDTH / image.shape[1])
            image = cv2.resize(image, (MAX_WIDTH, height), interpolation=cv2.INTER_AREA)
        landmarks = self._detector.detect(image, timestamp_ms=round(timestamp * 1000))
        metrics = analyze_frame(image, landmarks)
        prompt = self.guidance.update(metrics, timestamp)
        if self._poses and self.guidance.pose_reached(tolerance_deg=self._tolerance):
            self._capture(full, metrics)
        if prompt != self._last_prompt:
            self._last_prompt = prompt
            # everyone: the patient reads it, the clinicians see what the patient is told
            self._context.emit({"kind": "guidance", "prompt": prompt.value, "text": self.guidance.text})
        if timestamp - self._last_metrics_at >= METRICS_INTERVAL_S:
            self._last_metrics_at = timestamp
            self._context.emit(metrics_message(metrics), to_roles=CLINICIANS)

    def _capture(self, full: np.ndarray, metrics: FrameMetrics) -> None:
        pose = self._poses.popleft()
        ok, jpeg = cv2.imencode(".jpg", full, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding of a still failed")
        face = metrics.face
        assert face is not None  # pose_reached(): the latest frames all had a face
        meta = {"pose": pose, "width": full.shape[1], "height": full.shape[0],
                "head_pose": {"yaw": _round(face.pose.yaw_deg, 1), "pitch": _round(face.pose.pitch_deg, 1),
                              "roll": _round(face.pose.roll_deg, 1)},
                "sharpness": _round(face.sharpness, 1)}
        # The same landmarks in the full-resolution frame's pixels (normalised coordinates do not change).
        h, w = full.shape[:2]
        landmarks = dataclasses.replace(face.landmarks, pixels=face.landmarks.normalized[:, :2] * (w, h),
                                        width=w, height=h)
        observations = observe_skin(full, landmarks)
        self._context.keep("still", jpeg.tobytes(), {**meta, "observations": observations})
        self._context.emit({"kind": "observations", "pose": pose, "report": observations}, to_roles=CLINICIANS)
        scale = THUMBNAIL_WIDTH / full.shape[1]
        thumb = cv2.resize(full, (THUMBNAIL_WIDTH, round(full.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        ok, thumb_jpeg = cv2.imencode(".jpg", thumb, [cv2.IMWRITE_JPEG_QUALITY, 80])
        thumbnail = "data:image/jpeg;base64," + base64.b64encode(thumb_jpeg.tobytes()).decode()
        self._context.emit({"kind": "still", **meta, "thumbnail": thumbnail}, to_roles=CLINICIANS)
        if self._poses:
            self.guidance.target = POSES[self._poses[0]]
            self._context.emit({"kind": "capture", "state": "next", "pose": self._poses[0],
                                "remaining": list(self._poses)})
        else:
            self._end_capture("done")

    def close(self) -> None:
        self._detector.close()


CATALOGUE = {FaceAnalysisProcessor.name: FaceAnalysisProcessor}
