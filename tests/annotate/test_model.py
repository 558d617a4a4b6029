"""Shape validation: every malformed or hostile input is a typed AnnotationError, and
what is accepted comes back canonical and JSON-clean."""

from __future__ import annotations

import json
import math

import pytest

from annotate import limits
from annotate.model import DEFAULT_COLOR, PALETTE, AnnotationError, parse_shape

LINE = {"kind": "freehand", "points": [[0.1, 0.2], [0.3, 0.4]]}


def shape(**fields) -> dict:
    return {**LINE, **fields}


def code_of(raw) -> str:
    with pytest.raises(AnnotationError) as err:
        parse_shape(raw)
    return err.value.code


@pytest.mark.parametrize("raw, code", [
    # wrong types / missing fields
    ("freehand", "bad_annotation"),
    (None, "bad_annotation"),
    ({"points": [[0.1, 0.1]]}, "bad_annotation"),
    (shape(kind=3), "bad_annotation"),
    (shape(anchor="world"), "bad_annotation"),
    (shape(anchor=["face"]), "bad_annotation"),
    (shape(points=[]), "bad_annotation"),
    (shape(points="0.1,0.2"), "bad_annotation"),
    (shape(points=[[0.1, 0.2], "0.3,0.4"]), "bad_annotation"),
    (shape(points=[[0.1, 0.2, 0.3]]), "bad_annotation"),
    (shape(points=[[0.1]]), "bad_annotation"),
    (shape(points=[{"x": 0.1, "y": 0.2}]), "bad_annotation"),
    (shape(points=[["0.1", 0.2]]), "bad_annotation"),
    (shape(points=[[True, 0.2]]), "bad_annotation"),
    (shape(points=[[None, 0.2]]), "bad_annotation"),
    ({"kind": "circle", "center": [0.5, 0.5]}, "bad_annotation"),
    ({"kind": "arrow", "from": [0.5, 0.5]}, "bad_annotation"),
    ({"kind": "text", "text": "x"}, "bad_annotation"),
    # not finite
    (shape(points=[[math.nan, 0.2]]), "bad_annotation"),
    (shape(points=[[0.1, math.inf]]), "bad_annotation"),
    (shape(points=[[-math.inf, 0.2]]), "bad_annotation"),
    (shape(width=math.nan), "bad_annotation"),
    # outside the frame
    (shape(points=[[-0.001, 0.5]]), "out_of_range"),
    (shape(points=[[0.5, 1.001]]), "out_of_range"),
    (shape(points=[[10**400, 0.5]]), "out_of_range"),
    ({"kind": "circle", "center": [0.5, 0.5], "edge": [1.5, 0.5]}, "out_of_range"),
    # stroke size
    (shape(points=[[0.5, 0.5]] * (limits.MAX_POINTS_PER_STROKE + 1)), "too_many_points"),
    # unknown shape
    (shape(kind="polygon"), "unknown_shape"),
    (shape(kind="x" * 10_000), "unknown_shape"),
    # style
    (shape(color="red"), "bad_annotation"),
    (shape(color="#fff"), "bad_annotation"),
    (shape(color="#12345g"), "bad_annotation"),
    (shape(color=0xFF0000), "bad_annotation"),
    (shape(item="tattoo"), "bad_annotation"),
    (shape(item=["filler"]), "bad_annotation"),
    (shape(width="4"), "bad_annotation"),
    (shape(width=True), "bad_annotation"),
    (shape(width=0.5), "out_of_range"),
    (shape(width=limits.MAX_WIDTH + 1), "out_of_range"),
    # text
    ({"kind": "text", "at": [0.5, 0.5], "text": "x" * (limits.MAX_TEXT_CHARS + 1)}, "too_long"),
    ({"kind": "text", "at": [0.5, 0.5], "text": "   "}, "bad_annotation"),
    ({"kind": "text", "at": [0.5, 0.5], "text": 42}, "bad_annotation"),
    ({"kind": "text", "at": [0.5, 0.5], "text": "two\nlines"}, "bad_annotation"),
    ({"kind": "text", "at": [0.5, 0.5], "text": "evil\u202etxt"}, "bad_annotation"),
    ({"kind": "text", "at": [0.5, 0.5], "text": "lone \ud800 surrogate"}, "bad_annotation"),
    # face anchors
    (shape(anchor="face", points=[[0.1, 0.2]]), "bad_annotation"),
    (shape(anchor="face", points=[[1.0, 0.2, 0.3]]), "bad_annotation"),
    (shape(anchor="face", points=[[True, 0.2, 0.3]]), "bad_annotation"),
    (shape(anchor="face", points=[[3, math.nan, 0.3]]), "bad_annotation"),
    (shape(anchor="face", points=[[-1, 0.2, 0.3]]), "out_of_range"),
    (shape(anchor="face", points=[[limits.FACE_TRIANGLE_COUNT, 0.2, 0.3]]), "out_of_range"),
    (shape(anchor="face", points=[[3, -limits.MAX_EXTRAPOLATION - 0.01, 0.3]]), "out_of_range"),
    (shape(anchor="face", points=[[3, 1.5, 1.5]]), "out_of_range"),
])
def test_bad_shapes_are_typed_errors(raw, code):
    assert code_of(raw) == code


def test_error_is_a_protocol_error_message():
    with pytest.raises(AnnotationError) as err:
        parse_shape(shape(kind="blob"))
    assert err.value.to_message() == {"type": "error", "code": "unknown_shape",
                                      "message": err.value.message, "fatal": False}


def test_every_kind_is_accepted_in_canonical_form():
    assert parse_shape(shape(item="filler", width=6)) == {
        "kind": "freehand", "anchor": "screen", "points": ((0.1, 0.2), (0.3, 0.4)),
        "item": "filler", "color": PALETTE["filler"], "width": 6.0}
    assert parse_shape({"kind": "circle", "anchor": "face", "center": [5, 0.25, 0.25], "edge": [6, 1.2, -0.1],
                        "color": "#00AAFF"}) == {
        "kind": "circle", "anchor": "face", "center": (5, 0.25, 0.25), "edge": (6, 1.2, -0.1),
        "item": None, "color": "#00aaff", "width": limits.DEFAULT_WIDTH}
    arrow = {"kind": "arrow", "from": [0, 0], "to": [1, 1], "item": "laser", "color": "#123456"}
    assert parse_shape(arrow)["color"] == "#123456"
    assert parse_shape({"kind": "text", "at": [0.5, 0.5], "text": "Hyaluronsäure 1 ml"}) == {
        "kind": "text", "anchor": "screen", "at": (0.5, 0.5), "text": "Hyaluronsäure 1 ml",
        "item": None, "color": DEFAULT_COLOR}


def test_single_point_stroke_and_maximum_stroke_are_accepted():
    assert len(parse_shape(shape(points=[[0.5, 0.5]]))["points"]) == 1
    longest = shape(points=[[0.5, 0.5]] * limits.MAX_POINTS_PER_STROKE)
    assert len(parse_shape(longest)["points"]) == limits.MAX_POINTS_PER_STROKE


def test_numbers_are_rounded_and_extra_fields_dropped():
    parsed = parse_shape(shape(points=[[0.123456789, 1], [0, 0.987654321]],
                               onclick="alert(1)", id="forged", author="someone-else"))
    assert parsed["points"] == ((0.12346, 1.0), (0.0, 0.98765))
    assert set(parsed) == {"kind", "anchor", "points", "item", "color", "width"}


def test_maximum_stroke_fits_the_websocket_frame():
    worst = shape(anchor="face",
                  points=[[limits.FACE_TRIANGLE_COUNT - 1, -1.23456, -0.23456]] * limits.MAX_POINTS_PER_STROKE)
    message = {"type": "annotate", "op": "add", "ref": "r" * limits.MAX_REF_CHARS, "shape": worst}
    assert len(json.dumps(message, separators=(",", ":"))) < 64 * 1024
    json.dumps(parse_shape(worst), allow_nan=False)
