"""What a page without face-metrics is sent to draw face-anchored marks: only the
landmarks the board's face marks use, only while there are any, enough to resolve
them exactly as the full landmark set does."""

from __future__ import annotations

import json

import numpy as np

from annotate.anchoring import FACE_TRIANGLES, anchor_points, resolve_points
from annotate.board import AnnotationBoard
from annotate.face_relay import FaceLandmarkRelay, mesh_message
from annotate.limits import AuthorRateLimiter

SCREEN_STROKE = [(0.10 + 0.01 * i, 0.1) for i in range(5)]
LEFT_EYE_OUTER, LEFT_MOUTH_CORNER, NOSE_TIP = 263, 291, 1


def cheek_stroke(lm: np.ndarray, n: int = 12) -> list[tuple[float, float]]:
    """A short stroke down the patient's left cheek, in normalised frame coordinates."""
    start, end = lm[LEFT_EYE_OUTER, :2], (lm[LEFT_MOUTH_CORNER, :2] + lm[NOSE_TIP, :2]) / 2
    return [tuple(start + (end - start) * k / (n - 1)) for k in range(n)]


def metrics(landmarks, t_ms: int = 1200) -> dict:
    """A face-metrics analysis message as signalling/live_analysis.py builds it."""
    face = None if landmarks is None else {"landmarks": np.round(landmarks[:, :2], 4).tolist()}
    return {"type": "analysis", "processor": "face-analysis", "participant": "p-1", "t_ms": t_ms,
            "kind": "face-metrics", "face": face}


def board_with(*shapes: dict) -> AnnotationBoard:
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    for shape in shapes:
        board.apply("doctor", {"op": "add", "shape": shape})
    return board


def test_nothing_is_sent_without_face_anchored_marks(pose):
    lm = pose().landmarks()
    board = board_with({"kind": "freehand", "points": SCREEN_STROKE})
    assert FaceLandmarkRelay(board).landmarks_message(metrics(lm)) is None
    assert FaceLandmarkRelay(board_with()).landmarks_message(metrics(lm)) is None


def test_only_the_landmarks_the_marks_use_and_they_resolve_the_marks_exactly(pose):
    lm = pose().landmarks()
    stroke = [list(a) for a in anchor_points(cheek_stroke(lm), lm)]
    circle = [list(a) for a in anchor_points([lm[NOSE_TIP, :2], lm[NOSE_TIP, :2] + (0.01, 0)], lm)]
    board = board_with({"kind": "freehand", "points": SCREEN_STROKE},
                       {"kind": "freehand", "anchor": "face", "points": stroke},
                       {"kind": "circle", "anchor": "face", "center": circle[0], "edge": circle[1]})
    relay = FaceLandmarkRelay(board)
    moved = pose(angle_deg=20, scale=1.3, centre=(500, 300)).landmarks()
    message = json.loads(json.dumps(relay.landmarks_message(metrics(moved, t_ms=4321))))
    assert {k: message[k] for k in ("type", "processor", "participant", "t_ms", "kind")} == {
        "type": "analysis", "processor": "face-analysis", "participant": "p-1", "t_ms": 4321,
        "kind": "face-landmarks"}
    triangles = {a[0] for a in stroke + circle}
    wanted = sorted({int(i) for t in triangles for i in FACE_TRIANGLES[t]})
    assert [p[0] for p in message["landmarks"]] == wanted
    assert len(wanted) < 40  # a few dozen points instead of 478

    # a page resolving with only these gets what the full (rounded) landmarks give
    sparse = np.full((478, 2), np.nan)
    for i, x, y in message["landmarks"]:
        sparse[i] = (x, y)
    full = np.round(moved[:, :2], 4)
    for shape in board.snapshot()["shapes"][1:]:
        points = shape["points"] if shape["kind"] == "freehand" else [shape["center"], shape["edge"]]
        assert np.array_equal(resolve_points(points, sparse), resolve_points(points, full))


def test_follows_the_board_and_a_lost_face(pose):
    lm = pose().landmarks()
    board = board_with()
    relay = FaceLandmarkRelay(board)
    assert relay.needed() == ()
    anchors = [list(a) for a in anchor_points(cheek_stroke(lm)[:2], lm)]
    board.apply("doctor", {"op": "add", "shape": {"kind": "freehand", "anchor": "face", "points": anchors}})
    needed = relay.needed()
    assert needed and set(needed) >= set(FACE_TRIANGLES[anchors[0][0]].tolist())
    assert relay.landmarks_message(metrics(None))["landmarks"] is None  # the face was lost: say so
    board.apply("doctor", {"op": "undo"})
    assert relay.needed() == () and relay.landmarks_message(metrics(lm)) is None


def test_the_mesh_message_is_the_servers_own_table():
    message = json.loads(json.dumps(mesh_message("face-analysis", "p-1", 7)))
    assert message["kind"] == "face-mesh" and message["type"] == "analysis" and message["t_ms"] == 7
    assert message["triangles"] == FACE_TRIANGLES.tolist()
