"""Turns per-frame metrics into one steady prompt for the patient.

Two mechanisms keep the prompt from flickering:

- every condition is a Schmitt trigger (a Band): it switches on when its metric
  crosses `on` and off only when the metric is back past `off`, so a value hovering
  at one threshold does not toggle it;
- the shown prompt changes only when a different one has been the top candidate
  for `confirm_s` (a one-frame miss changes nothing) and the shown one has been up
  for `min_dwell_s` (competing conditions cannot alternate quickly).

The candidate is the first active condition in priority order (no face first,
then distance, centring, pose, light, blur), else "perfect". Sharpness is judged
against the stream's own recent best rather than a fixed number: the absolute value
depends on the camera, codec and bitrate, and "hold still" is about motion, i.e. a
drop relative to this stream.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .analysis import FaceMetrics, FrameMetrics
from .prompts import DEFAULT_LANGUAGE, Prompt, prompt_text


class TargetPose(enum.Enum):
    """Requested head orientation, valued by its yaw in degrees (head_pose.py conventions).

    LEFT_45: the patient turns 45 degrees to their own left, so the camera sees their
    right cheek (clinically a right oblique view); RIGHT_45 the mirror image.
    """

    FRONTAL = 0.0
    LEFT_45 = 45.0
    RIGHT_45 = -45.0

    @property
    def yaw_deg(self) -> float:
        return self.value


@dataclass(frozen=True)
class Band:
    """Hysteresis thresholds: active once the value crosses `on`, inactive once it is
    back past `off`. on > off for "too high" conditions, on < off for "too low" ones."""

    on: float
    off: float


@dataclass(frozen=True)
class GuidanceConfig:
    # Defaults are first estimates for phone video; calibrate on real consultations.
    too_far: Band = Band(0.30, 0.35)  # face box height / frame height
    too_close: Band = Band(0.75, 0.68)
    off_centre: Band = Band(0.30, 0.15)  # |offset| in half-frame units
    yaw: Band = Band(10.0, 5.0)  # |yaw - target yaw|, degrees
    pitch: Band = Band(12.0, 6.0)  # |pitch|, degrees
    roll: Band = Band(10.0, 5.0)  # |roll|, degrees
    # 95th percentile of face luma, not the median: dark skin in good light still has bright
    # areas, so it is not asked for more light.
    dark: Band = Band(90.0, 110.0)
    bright: Band = Band(0.08, 0.03)  # fraction of clipped face pixels
    # Chroma of the frame's mean colour. Colourful content shifts it too: the test portrait
    # (blue backdrop, flag) reads 10 without any cast.
    cast: Band = Band(16.0, 11.0)
    blur: Band = Band(0.55, 0.70)  # sharpness / this stream's recent reference
    sharpness_window_s: float = 5.0
    sharpness_reference_percentile: float = 90.0  # not the max: one noisy frame must not set the bar
    confirm_s: float = 0.3
    min_dwell_s: float = 1.0
    hold_frames: int = 5  # consecutive frames pose_reached needs (~0.5 s at 10 fps)
    capture_sharpness: float = 0.8  # a capture frame's sharpness / reference
    capture_tolerance_deg: float = 5.0


class _Flag:
    def __init__(self, band: Band) -> None:
        self._sign = 1.0 if band.on >= band.off else -1.0  # flip "too low" into "too high"
        self._on, self._off = band.on * self._sign, band.off * self._sign
        self.active = False

    def update(self, value: float) -> bool:
        v = value * self._sign
        self.active = v >= self._off if self.active else v > self._on
        return self.active


@dataclass(frozen=True)
class PoseHold:
    reached: bool
    frames_held: int  # consecutive latest frames within tolerance and sharp enough
    frames_needed: int

    def __bool__(self) -> bool:
        return self.reached


class _Inputs(NamedTuple):
    face: FaceMetrics
    chroma: float  # colour cast of the frame
    sharpness_ratio: float  # sharpness / this stream's recent reference


@dataclass(frozen=True)
class _Sample:
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    sharpness_ratio: float


class Guidance:
    """One per patient stream; feed it every analysed frame in time order."""

    def __init__(self, config: GuidanceConfig = GuidanceConfig(), *, target: TargetPose = TargetPose.FRONTAL,
                 language: str = DEFAULT_LANGUAGE) -> None:
        self.config = config
        self.target = target  # the capture protocol changes it between photos
        self.language = language
        c = config
        # In priority order: (prompt, its condition, the metric it watches).
        self._checks: list[tuple[Prompt, _Flag, Callable[[_Inputs], float]]] = [
            (Prompt.MOVE_CLOSER, _Flag(c.too_far), lambda i: i.face.framing.height_frac),
            (Prompt.MOVE_BACK, _Flag(c.too_close), lambda i: i.face.framing.height_frac),
            # Face right of centre in the image = towards the patient's left: they move right.
            (Prompt.MOVE_LEFT, _Flag(c.off_centre), lambda i: -i.face.framing.offset_x),
            (Prompt.MOVE_RIGHT, _Flag(c.off_centre), lambda i: i.face.framing.offset_x),
            (Prompt.MOVE_UP, _Flag(c.off_centre), lambda i: i.face.framing.offset_y),
            (Prompt.MOVE_DOWN, _Flag(c.off_centre), lambda i: -i.face.framing.offset_y),
            (Prompt.TURN_LEFT, _Flag(c.yaw), lambda i: self.target.yaw_deg - i.face.pose.yaw_deg),
            (Prompt.TURN_RIGHT, _Flag(c.yaw), lambda i: i.face.pose.yaw_deg - self.target.yaw_deg),
            (Prompt.CHIN_UP, _Flag(c.pitch), lambda i: -i.face.pose.pitch_deg),
            (Prompt.CHIN_DOWN, _Flag(c.pitch), lambda i: i.face.pose.pitch_deg),
            (Prompt.STRAIGHTEN, _Flag(c.roll), lambda i: abs(i.face.pose.roll_deg)),
            (Prompt.MORE_LIGHT, _Flag(c.dark), lambda i: i.face.exposure.p95),
            (Prompt.TOO_BRIGHT, _Flag(c.bright), lambda i: i.face.exposure.clipped),
            (Prompt.COLOUR_CAST, _Flag(c.cast), lambda i: i.chroma),
            (Prompt.HOLD_STILL, _Flag(c.blur), lambda i: i.sharpness_ratio),
        ]
        self._sharpness: deque[tuple[float, float]] = deque()  # (time, sharpness) within the window
        self._recent: deque[_Sample | None] = deque(maxlen=c.hold_frames)
        self._shown: Prompt | None = None
        self._shown_since = 0.0
        self._pending: Prompt | None = None
        self._pending_since = 0.0

    @property
    def prompt(self) -> Prompt | None:
        return self._shown

    @property
    def text(self) -> str | None:
        return None if self._shown is None else prompt_text(self._shown, self.language)

    def update(self, metrics: FrameMetrics, now_s: float) -> Prompt:
        """Take one frame's metrics (`now_s`: its time, monotonic seconds); return the prompt to show."""
        candidate = self._candidate(metrics, now_s)
        if candidate != self._pending:
            self._pending, self._pending_since = candidate, now_s
        if self._shown is None or (
            candidate != self._shown
            and now_s - self._pending_since >= self.config.confirm_s
            and now_s - self._shown_since >= self.config.min_dwell_s
        ):
            self._shown, self._shown_since = candidate, now_s
        return self._shown

    def pose_reached(self, target: TargetPose | None = None, tolerance_deg: float | None = None) -> PoseHold:
        """Whether the last `hold_frames` frames all had a face within `tolerance_deg` of
        `target` (yaw; pitch and roll within it of level) and were sharp enough to keep."""
        yaw = (target or self.target).yaw_deg
        tol = self.config.capture_tolerance_deg if tolerance_deg is None else tolerance_deg
        held = 0
        for s in reversed(self._recent):
            if (s is None or abs(s.yaw_deg - yaw) > tol or abs(s.pitch_deg) > tol or abs(s.roll_deg) > tol
                    or s.sharpness_ratio < self.config.capture_sharpness):
                break
            held += 1
        return PoseHold(held >= self.config.hold_frames, held, self.config.hold_frames)

    def _candidate(self, metrics: FrameMetrics, now_s: float) -> Prompt:
        face = metrics.face
        if face is None:
            # Flags keep their state: a face lost for a frame comes back with its hysteresis intact.
            self._recent.append(None)
            return Prompt.FACE_CAMERA
        ratio = self._sharpness_ratio(face.sharpness, now_s)
        self._recent.append(_Sample(face.pose.yaw_deg, face.pose.pitch_deg, face.pose.roll_deg, ratio))
        inputs = _Inputs(face, metrics.cast.chroma, ratio)
        # Every flag updates every frame (no short-circuit), so each keeps its own hysteresis.
        active = [prompt for prompt, flag, metric in self._checks if flag.update(metric(inputs))]
        return active[0] if active else Prompt.PERFECT

    def _sharpness_ratio(self, value: float, now_s: float) -> float:
        window = self._sharpness
        window.append((now_s, value))
        while window[0][0] < now_s - self.config.sharpness_window_s:
            window.popleft()
        reference = float(np.percentile([v for _, v in window], self.config.sharpness_reference_percentile))
        return value / reference if reference > 0 else 1.0

