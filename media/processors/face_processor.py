"""The face-analysis processor: guidance for the patient, metrics for the clinicians.

Runs in its own worker (media.processing) on the patient's decoded video at up to
10 fps. The patient is told one steady prompt at a time ("lift your chin a
little"), sent only when it changes; doctor and expert get pose, framing,
quality and the landmark mesh (for the overlay they can toggle) at 5 Hz.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..processing import DecodedInput, ProcessorContext
from .analysis import FrameMetrics, analyze_frame
from .face_landmarks import FaceLandmarkDetector, Mode
from .guidance import Guidance

MAX_WIDTH = 640  # landmarks are as good at 640 px and cost less
METRICS_INTERVAL_S = 0.2
CLINICIANS = {"doctor", "expert"}


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
    def in_language(cls, language: str) -> type["FaceAnalysisProcessor"]:
        """This processor class with the patient's prompts in `language` (en, zh)."""
        return type(cls.__name__, (cls,), {"language": language})

    def start(self, context: ProcessorContext) -> None:
        self._context = context
        self._detector = FaceLandmarkDetector(mode=Mode.VIDEO)
        self.guidance = Guidance(language=self.language)
        self._last_prompt = None
        self._last_metrics_at = float("-inf")

    def process(self, image: np.ndarray, timestamp: float) -> None:
        if image.shape[1] > MAX_WIDTH:
            height = round(image.shape[0] * MAX_WIDTH / image.shape[1])
            image = cv2.resize(image, (MAX_WIDTH, height), interpolation=cv2.INTER_AREA)
        landmarks = self._detector.detect(image, timestamp_ms=round(timestamp * 1000))
        metrics = analyze_frame(image, landmarks)
        prompt = self.guidance.update(metrics, timestamp)
        if prompt != self._last_prompt:
            self._last_prompt = prompt
            # everyone: the patient reads it, the clinicians see what the patient is told
            self._context.emit({"kind": "guidance", "prompt": prompt.value, "text": self.guidance.text})
        if timestamp - self._last_metrics_at >= METRICS_INTERVAL_S:
            self._last_metrics_at = timestamp
            self._context.emit(metrics_message(metrics), to_roles=CLINICIANS)

    def close(self) -> None:
        self._detector.close()


CATALOGUE = {FaceAnalysisProcessor.name: FaceAnalysisProcessor}
