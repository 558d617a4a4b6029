"""Where the face sits in the frame and how big it is, from the landmark bounding box.

The box is not clipped to the frame: a face partly outside still reports its real
size and position (MediaPipe extrapolates the hidden landmarks), which is what
"move back" and "move left" need.
"""

from __future__ import annotations

from dataclasses import dataclass

from .face_landmarks import FaceLandmarks


@dataclass(frozen=True)
class Framing:
    # Box height / frame height: the distance cue. Unlike the width it barely changes
    # when the patient turns 45 degrees for an oblique view.
    height_frac: float
    width_frac: float
    area_frac: float  # box area / frame area
    # Box centre minus frame centre, in half-frame units (-1 .. 1 while the centre is
    # inside the frame). offset_x > 0: face right of centre in the image, i.e. towards
    # the patient's left; offset_y > 0: face below centre.
    offset_x: float
    offset_y: float


def framing(landmarks: FaceLandmarks) -> Framing:
    (x0, y0), (x1, y1) = landmarks.normalized[:, :2].min(axis=0), landmarks.normalized[:, :2].max(axis=0)
    width, height = float(x1 - x0), float(y1 - y0)
    return Framing(
        height_frac=height,
        width_frac=width,
        area_frac=width * height,
        offset_x=float(x0 + x1) - 1.0,  # ((x0 + x1) / 2 - 0.5) / 0.5
        offset_y=float(y0 + y1) - 1.0,
    )
