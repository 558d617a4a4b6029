"""Annotations a client sends (annotate/model.py parse_shape, annotate/board.py
AnnotationBoard.apply): any JSON in `annotate` messages from several authors.

Properties: any value gives a canonical shape or an AnnotationError with a documented code;
a canonical shape keeps every promise of the model's docstring (kinds, anchors, ranges,
sizes, colours, no extra fields) and is a fixed point (sent again as JSON, it comes back the
same); a rejected operation changes nothing on the board, an accepted one raises the
version by one; the board stays within its shape and point limits; every event and
snapshot can be sent and recorded (JSON without NaN, UTF-8 encodable: the recorder writes
ensure_ascii=False).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from annotate import limits
from annotate.board import AnnotationBoard
from annotate.limits import AuthorRateLimiter
from annotate.model import _POINT_FIELDS, ANCHORS, PALETTE, SHAPE_KINDS, AnnotationError, parse_shape, point_count
from annotate.timeline import AnnotationTimeline
from recorder.keys import KeyStore
from recorder.writer import MAX_EVENT_BYTES, RecordingWriter

from .support import scaled, surrogate_text

SHAPE_ERRORS = {"bad_annotation", "unknown_shape", "too_many_points", "out_of_range", "too_long"}
BOARD_ERRORS = SHAPE_ERRORS | {"board_full", "nothing_to_undo", "forbidden", "rate_limited"}

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**1100), 2**1100)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=10) | surrogate_text)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
coordinates = st.floats(-0.5, 1.5) | st.floats(0, 1) | st.sampled_from((0, 1, 0.0, 1.0, 1e-300, -0.0))
screen_points = st.lists(coordinates, min_size=2, max_size=2)
face_points = st.tuples(st.integers(-2, limits.FACE_TRIANGLE_COUNT + 1), st.floats(-2, 3), st.floats(-2, 3)).map(list)
points = st.one_of(screen_points, face_points, json_values)
labels = st.text(max_size=limits.MAX_TEXT_CHARS + 5) | surrogate_text


@st.composite
def shapes(draw: st.DrawFn) -> object:
    """Shapes as a page sends them, each field now and then of another type or range, or
    missing; sometimes any JSON at all."""
    def mostly(valid: st.SearchStrategy, other: st.SearchStrategy) -> object:
        return draw(other if draw(st.integers(0, 11)) == 0 else valid)

    if draw(st.integers(0, 11)) == 0:
        return draw(json_values)
    kind = mostly(st.sampled_from(SHAPE_KINDS), st.text(max_size=8) | json_values)
    anchor = mostly(st.sampled_from(ANCHORS), json_values)
    point = face_points if anchor == "face" else screen_points
    shape: dict = {"kind": kind}
    if anchor != "screen" or draw(st.booleans()):
        shape["anchor"] = anchor
    if kind == "freehand":
        shape["points"] = mostly(st.lists(point, min_size=1, max_size=12),
                                 st.lists(point | points, max_size=8) | st.just([[0.5, 0.5]] * 2001) | json_values)
    for name in _POINT_FIELDS.get(kind, ()) if isinstance(kind, str) else ():
        if draw(st.integers(0, 15)):
            shape[name] = mostly(point, points)
    if kind == "text":
        shape["text"] = mostly(st.text(min_size=1, max_size=limits.MAX_TEXT_CHARS), labels | json_values)
    for name, valid, other in (
            ("item", st.sampled_from(tuple(PALETTE)), json_values),
            ("color", st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True), json_values),
            ("width", st.floats(limits.MIN_WIDTH, limits.MAX_WIDTH), st.floats(0, 40) | json_values),
            ("extra", json_values, json_values)):
        if draw(st.booleans()):
            shape[name] = mostly(valid, other)
    return shape


def check_canonical(shape: dict) -> None:
    kind, anchor = shape["kind"], shape["anchor"]
    assert kind in SHAPE_KINDS and anchor in ANCHORS
    allowed = {"kind", "anchor", "item", "color"} | set(_POINT_FIELDS.get(kind, ("points",)))
    allowed |= {"text"} if kind == "text" else {"width"}
    assert set(shape) == allowed  # unknown extra fields dropped
    pts = list(shape["points"]) if kind == "freehand" else [shape[n] for n in _POINT_FIELDS[kind]]
    assert 1 <= len(pts) <= limits.MAX_POINTS_PER_STROKE and point_count(shape) == len(pts)
    for p in pts:
        if anchor == "screen":
            assert len(p) == 2 and all(0.0 <= c <= 1.0 for c in p)
        else:
            t, u, v = p
            assert isinstance(t, int) and 0 <= t < limits.FACE_TRIANGLE_COUNT
            assert min(1 - u - v, u, v) >= -limits.MAX_EXTRAPOLATION - 1e-4  # after rounding to 5 decimals
        assert all(math.isfinite(c) for c in p)
    assert shape["item"] is None or shape["item"] in PALETTE
    assert len(shape["color"]) == 7 and shape["color"] == shape["color"].lower()
    if kind == "text":
        assert 0 < len(shape["text"]) <= limits.MAX_TEXT_CHARS and shape["text"].strip()
        shape["text"].encode("utf-8")
    else:
        assert limits.MIN_WIDTH <= shape["width"] <= limits.MAX_WIDTH


@given(shapes())
@example({"kind": "circle", "center": [0.5, 10 ** 400], "edge": [0, 0]})  # an integer too large for a float
@example({"kind": "text", "at": [0.5, 0.5], "text": "\ud800"})
@example({"kind": "arrow", "from": [0.5, 0.5], "to": [True, 0]})
@example({"kind": "circle", "anchor": "face", "center": [851, 2.5, -1.5], "edge": [0, 0, 0]})
def test_any_shape_is_canonical_or_an_annotation_error(raw):
    try:
        shape = parse_shape(raw)
    except AnnotationError as exc:
        assert exc.code in SHAPE_ERRORS and isinstance(exc.message, str)
        json.dumps(exc.to_message())
        event(f"refused: {exc.code}")
        return
    event(f"accepted: {shape['kind']}")
    check_canonical(shape)
    # a fixed point: what the board relays, sent back as JSON, is the same shape
    assert parse_shape(json.loads(json.dumps(shape))) == shape


def recordable(message: dict) -> bytes:
    """As the room sends it (signalling/outbox.py) and as the recorder writes it (recorder/writer.py)."""
    json.dumps(message, separators=(",", ":"))
    return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


authors = st.sampled_from(("doctor-1", "expert-2", "patient-3"))
messages = st.one_of(
    st.fixed_dictionaries({"op": st.just("add"), "shape": shapes()},
                          optional={"ref": st.text(max_size=70) | surrogate_text | json_values}),
    st.fixed_dictionaries({"op": st.just("undo")}),
    st.fixed_dictionaries({"op": st.just("clear")}, optional={"shapes_of": authors | surrogate_text | json_values}),
    json_values,
)


def board_state(board: AnnotationBoard) -> tuple:
    return board.version, copy.deepcopy(board._shapes), board._points, board._next_id


ARROW = {"kind": "arrow", "from": [0.1, 0.1], "to": [0.9, 0.9]}


@scaled(2)
@given(st.lists(st.tuples(authors, st.booleans(), messages), max_size=30), st.booleans())
# a lone surrogate in `ref` or `shapes_of` was echoed in the event, and stopped the room's recording
@example([("doctor-1", False, {"op": "add", "shape": ARROW, "ref": "\ud800"})], True)
@example([("doctor-1", True, {"op": "clear", "shapes_of": "\udcff"})], True)
def test_a_board_takes_any_operations_and_changes_only_on_success(ops, generous):
    # generous: no flood limit in the way, so boards fill up; otherwise the default limiter
    limiter = AuthorRateLimiter(rate=1e9, burst=1e9) if generous else AuthorRateLimiter(clock=lambda: 0.0)
    board = AnnotationBoard(now_ms=lambda: 1234, limiter=limiter)
    for author, moderator, message in ops:
        before = board_state(board)
        try:
            out = board.apply(author, message, moderator=moderator)
        except AnnotationError as exc:
            assert exc.code in BOARD_ERRORS
            assert board_state(board) == before  # a rejected operation changes nothing
            event(f"refused: {exc.code}")
            continue
        event(f"accepted: {out['op']}")
        assert board.version == before[0] + 1 and out["version"] == board.version
        assert out["type"] == "annotation" and out["author"] == author
        if out["op"] == "add":
            check_canonical({k: v for k, v in out["shape"].items() if k not in ("id", "author", "t_ms")})
        assert len(recordable(out)) <= MAX_EVENT_BYTES
        assert len(board._shapes) <= limits.MAX_SHAPES_PER_BOARD
        assert board._points == sum(point_count(s) for s in board._shapes.values()) <= limits.MAX_POINTS_PER_BOARD
    recordable(board.snapshot())


# --- with the real recorder ------------------------------------------------------------------------

MAX_STROKE = {"kind": "freehand", "anchor": "face", "points": [[851, -1.49999, 2.49998]] * limits.MAX_POINTS_PER_STROKE,
              "item": "filler", "width": 31.99}


def recording_writer(data_dir: Path) -> RecordingWriter:
    keys = KeyStore.open(data_dir, environ={}, create=True)
    return RecordingWriter.start(data_dir, keys, room="r1", audit=None, actor="doctor-1", fsync=False)


def test_the_largest_events_a_board_accepts_are_recorded(tmp_path):
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    writer = recording_writer(tmp_path)
    writer.write_event(0, board.apply("d" * limits.MAX_AUTHOR_CHARS,
                                      {"op": "add", "shape": MAX_STROKE, "ref": "\U0001F600" * limits.MAX_REF_CHARS}))
    for bad in ("\ud800", "a\udcff"):  # refused, not echoed into the recording
        with pytest.raises(AnnotationError):
            board.apply("d", {"op": "add", "shape": ARROW, "ref": bad})
        with pytest.raises(AnnotationError):
            board.apply("d", {"op": "clear", "shapes_of": bad}, moderator=True)
    writer.close()


def test_a_full_board_is_recorded_in_parts_that_add_up_to_it(tmp_path):
    """A board holds up to its point limit (~0.5 MB of JSON), over the recorder's 64 KiB event
    limit: pressing record after some drawing stopped the recording ('event too large'). The
    snapshot is recorded in parts, each under the limit, and a replay rebuilds the whole drawing."""
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    with pytest.raises(AnnotationError):
        for i in range(1000):  # until the board is full
            board.apply(f"doctor-{i % 3}", {"op": "add", "shape": MAX_STROKE})
    whole = board.snapshot()
    assert len(json.dumps(whole).encode()) > 4 * MAX_EVENT_BYTES
    parts = board.snapshot_parts(MAX_EVENT_BYTES - 1024)
    assert len(parts) > 4 and [p["part"] for p in parts] == list(range(len(parts)))
    writer = recording_writer(tmp_path)
    try:
        for part in parts:
            writer.write_event(part["t_ms"], part)  # every part fits
    finally:
        writer.close()
    at = parts[0]["t_ms"]
    assert all(p["t_ms"] == at and p["version"] == whole["version"] for p in parts)
    replayed = AnnotationTimeline(parts).shapes_at(at)
    assert [s["id"] for s in replayed] == [s["id"] for s in whole["shapes"]]
    # a later snapshot's part 0 starts over: nothing of the earlier drawing stays
    board.apply("doctor-0", {"op": "clear", "shapes_of": "doctor-0"}, moderator=True)
    later = [{**p, "t_ms": at + 1} for p in board.snapshot_parts(MAX_EVENT_BYTES - 1024)]
    assert {s["id"] for s in AnnotationTimeline(parts + later).shapes_at(at + 1)} == {
        s["id"] for s in board.snapshot()["shapes"]}
