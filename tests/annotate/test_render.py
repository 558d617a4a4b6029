"""The renderer draws each shape where the drawing spec puts it (pixel checks on a
1280x720 frame), never outside the frame, and resolves face-anchored shapes against
the frame's own landmarks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from annotate.anchoring import anchor
from annotate.board import AnnotationBoard
from annotate.limits import AuthorRateLimiter
from annotate.render import render
from tests.annotate.conftest import FRAME_H, FRAME_W

RED, GREEN, BLUE = "#ff0000", "#00ff00", "#0000ff"
RED_BGR, GREEN_BGR = (0, 0, 255), (0, 255, 0)


def shapes(*raw: dict) -> list[dict]:
    """Shapes as a page or the recorder receives them: through the board and JSON."""
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    for shape in raw:
        board.apply("doctor", {"op": "add", "shape": shape})
    return json.loads(json.dumps(board.snapshot()))["shapes"]


def blank(value: int = 0, w: int = FRAME_W, h: int = FRAME_H) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def is_(frame: np.ndarray, x: float, y: float, bgr) -> bool:
    return tuple(frame[int(y), int(x)]) == tuple(bgr)


def stroke_width(frame: np.ndarray, x: int) -> float:
    """Drawn width in pixels across column x: the anti-aliased coverage summed."""
    return float(frame[:, x].max(axis=1).sum()) / 255


def test_line_is_drawn_on_its_path_in_bgr_order():
    frame = render(blank(), shapes({"kind": "freehand", "points": [[0.1, 0.5], [0.3, 0.5]], "color": RED, "width": 4}))
    for x in (140, 256, 370):
        assert is_(frame, x, 360, RED_BGR) and is_(frame, x, 359, RED_BGR)
        assert is_(frame, x, 354, (0, 0, 0)) and is_(frame, x, 366, (0, 0, 0))
        assert abs(stroke_width(frame, x) - 4) <= 1.2  # width 4 at 720 p
    assert frame[:, :120].max() == 0 and frame[:, 400:].max() == 0


def test_width_scales_with_frame_height():
    for w in (1, 2, 3, 4, 6, 10, 32):
        line = shapes({"kind": "freehand", "points": [[0.1, 0.5], [0.9, 0.5]], "width": w})
        for height in (360, 720, 1080, 1440):
            frame = render(blank(w=height * 16 // 9, h=height), line)
            expected = max(w * height / 720, 1.3)  # the thinnest OpenCV stroke
            assert abs(stroke_width(frame, height * 8 // 9) - expected) <= 1.2, (w, height)


def test_single_point_stroke_is_a_dot():
    frame = render(blank(), shapes({"kind": "freehand", "points": [[0.5, 0.5]], "color": RED, "width": 10}))
    assert is_(frame, 640, 360, RED_BGR) and is_(frame, 643, 357, RED_BGR)
    assert is_(frame, 648, 360, (0, 0, 0)) and frame[:350].max() == 0


def test_circle_radius_is_measured_in_pixels():
    frame = render(blank(), shapes({"kind": "circle", "center": [0.5, 0.5], "edge": [0.5 + 100 / FRAME_W, 0.5],
                                    "color": RED, "width": 4}))
    for x, y in ((740, 360), (540, 360), (640, 260), (640, 460), (640 + 70.7, 360 + 70.7)):
        assert frame[int(y) - 1:int(y) + 1, int(x) - 1:int(x) + 1].max() == 255, (x, y)
    assert frame[340:380, 620:660].max() == 0  # hollow
    assert frame[:, :530].max() == 0 and frame[:, 751:].max() == 0


def test_arrow_has_a_shaft_and_a_filled_head_at_its_tip():
    frame = render(blank(), shapes({"kind": "arrow", "from": [0.2, 0.8], "to": [0.5, 0.8], "color": GREEN, "width": 4}))
    tip, y = 640, 576
    head = 10 + 3 * 4                            # spec: head length at 720 p
    half = head * math.tan(math.radians(25))     # spec: half-angle 25°
    assert is_(frame, 400, y, GREEN_BGR)         # shaft
    assert is_(frame, tip - 3, y, GREEN_BGR)     # near the tip
    assert frame[y - 4:y + 5, tip + 3:].max() == 0  # nothing beyond the tip
    # the head is wider than the shaft near its base...
    assert is_(frame, tip - head + 3, y - half + 3, GREEN_BGR) and is_(frame, tip - head + 3, y + half - 3, GREEN_BGR)
    assert is_(frame, 400, y - half + 3, (0, 0, 0))
    # ...and ends there
    assert stroke_width(frame, tip - head - 4) < 5


def test_text_on_a_dark_box_at_its_point():
    frame = render(blank(128), shapes({"kind": "text", "at": [0.1, 0.1], "text": "Filler 1 ml", "color": GREEN}))
    x0, y0 = 128, 72
    box_h = round(1.2 * 20) + 2 * round(0.3 * 20)   # spec at 720 p
    assert tuple(frame[y0, x0]) == (51, 51, 51)      # 60 % black over 128
    assert tuple(frame[y0 + box_h - 1, x0]) == (51, 51, 51)
    assert tuple(frame[y0 + box_h, x0]) == (128, 128, 128)
    assert tuple(frame[y0 - 1, x0]) == (128, 128, 128) and tuple(frame[y0, x0 - 1]) == (128, 128, 128)
    box = frame[y0:y0 + box_h]
    right = x0 + int(np.flatnonzero((box[:, x0:] != 128).any(axis=(0, 2)))[-1])
    assert 100 < right - x0 < 160                    # "Filler 1 ml" at 20 px
    text = (box[..., 1] > 200) & (box[..., 0] < 60)  # green glyph pixels
    assert text.sum() > 150
    rows = np.flatnonzero(text.any(axis=1))
    assert rows.min() >= round(0.3 * 20) - 1 and rows.max() <= box_h - round(0.3 * 20)
    outside = frame.copy()
    outside[y0:y0 + box_h, x0:right + 1] = 128
    assert (outside == 128).all()


def test_non_ascii_text_is_drawn():
    a = render(blank(), shapes({"kind": "text", "at": [0.1, 0.1], "text": "Hyaluronsaure"}))
    umlaut = render(blank(), shapes({"kind": "text", "at": [0.1, 0.1], "text": "Hyaluronsäure"}))
    assert (a != umlaut).any() and umlaut.sum() > 0.9 * a.sum()


def test_later_shapes_are_on_top():
    frame = render(blank(), shapes({"kind": "freehand", "points": [[0.1, 0.5], [0.9, 0.5]], "color": RED},
                                   {"kind": "freehand", "points": [[0.5, 0.1], [0.5, 0.9]], "color": BLUE}))
    assert is_(frame, 640, 360, (255, 0, 0))


def test_nothing_is_drawn_outside_the_frame():
    canvas = np.full((FRAME_H + 200, FRAME_W + 200, 3), 7, np.uint8)
    frame = canvas[100:-100, 100:-100]
    frame[:] = 128
    render(frame, shapes(
        {"kind": "freehand", "points": [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], "width": 32},
        {"kind": "circle", "center": [1, 1], "edge": [0, 0], "width": 32},
        {"kind": "arrow", "from": [0.5, 0.5], "to": [0, 0], "width": 32},
        {"kind": "arrow", "from": [0.5, 0.5], "to": [1, 0], "width": 32},
        {"kind": "text", "at": [1, 1], "text": "corner", "color": GREEN},
        {"kind": "text", "at": [0, 0.5], "text": "W" * 200},
    ))
    frame[:] = 7
    assert (canvas == 7).all()


def test_a_label_at_the_edge_is_moved_inside():
    frame = render(blank(128), shapes({"kind": "text", "at": [1, 1], "text": "corner", "color": GREEN}))
    assert tuple(frame[-1, -1]) == (51, 51, 51)  # its box reaches the bottom-right pixel
    assert (frame[-40:, -100:, 1] > 200).sum() > 50


def test_face_anchored_shapes_follow_the_frames_face(pose):
    base, moved = pose(), pose(angle_deg=20, scale=1.5, centre=(500, 300))
    base_lm, moved_lm = base.landmarks(), moved.landmarks()
    cheek = (base_lm[263, :2] + base_lm[291, :2]) / 2 * (FRAME_W, FRAME_H)
    rim = cheek + (20, 0)
    circle = shapes({"kind": "circle", "anchor": "face", "color": RED, "width": 3,
                     "center": anchor(cheek / (FRAME_W, FRAME_H), base_lm),
                     "edge": anchor(rim / (FRAME_W, FRAME_H), base_lm)})

    assert render(blank(), circle).max() == 0  # no face in the frame: not drawn
    frame = render(blank(), circle, moved_lm)
    centre = base.follow(moved, cheek)
    radius = 20 * 1.5
    for angle in np.linspace(0, 2 * math.pi, 12, endpoint=False):
        x, y = centre + radius * np.array([math.cos(angle), math.sin(angle)])
        assert frame[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2, 2].max() == 255, angle
    assert frame[int(centre[1]) - 5:int(centre[1]) + 5, int(centre[0]) - 5:int(centre[0]) + 5].max() == 0
    ys, xs = np.nonzero(frame[..., 2])
    assert np.hypot(xs + 0.5 - centre[0], ys + 0.5 - centre[1]).max() < radius + 4


@pytest.mark.parametrize("bad", [np.zeros((720, 1280), np.uint8), np.zeros((720, 1280, 4), np.uint8),
                                 np.zeros((720, 1280, 3), np.float32)])
def test_only_bgr_frames(bad):
    with pytest.raises(ValueError):
        render(bad, [])
