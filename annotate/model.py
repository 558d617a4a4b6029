"""Annotation shapes: strict validation of what a client sends, and the canonical
form the board stores and broadcasts (JSON-ready; sequences are tuples so a stored
shape cannot be changed through a dict handed out in an event).

A shape as a client sends it (the `shape` of an `annotate` message):

    {"kind": "freehand", "anchor": "screen", "points": [[x, y], ...], "item": "filler", "width": 4}
    {"kind": "circle",   "anchor": "face",   "center": P, "edge": P, "color": "#ff8800"}
    {"kind": "arrow",    "from": P, "to": P}
    {"kind": "text",     "at": P, "text": "2 ml"}

Every point P of a shape uses the shape's `anchor` (default "screen"):
- "screen": [x, y], normalised to the video frame, 0..1 from the top-left corner;
- "face": [t, u, v], triangle t of the face mesh (annotate/anchoring.py) and the point
  A + u·(B − A) + v·(C − A) of its corners A, B, C, so it moves with the face.

A circle is its centre and a point on its rim, so it stays round on any frame size
and scales with a face. `item` names a treatment from PALETTE and gives the colour
unless `color` ("#rrggbb") overrides it; `width` is in reference pixels (render.py).
Unknown extra fields are dropped, never stored or relayed.

Error codes: bad_annotation (wrong type, missing field, not finite), unknown_shape,
too_many_points, out_of_range, too_long (text); the board adds board_full,
nothing_to_undo, forbidden and rate_limited.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from annotate import limits

# Treatment items and their colours: saturated hues that stay visible on every skin
# tone and differ from each other for colour-blind viewers by lightness as well.
PALETTE: dict[str, str] = {
    "toxin": "#2f80ff",    # botulinum toxin injection sites
    "filler": "#ff2fd0",   # dermal filler
    "laser": "#22e07a",    # laser / energy-based treatment area
    "peel": "#ffd21f",     # chemical peel area
    "lesion": "#ff3030",   # lesion to watch or biopsy
    "note": "#ffffff",     # anything else
}
DEFAULT_COLOR = PALETTE["note"]

SHAPE_KINDS = ("freehand", "circle", "arrow", "text")
ANCHORS = ("screen", "face")
# The point fields of each kind with a fixed number of points.
_POINT_FIELDS = {"circle": ("center", "edge"), "arrow": ("from", "to"), "text": ("at",)}

_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
# Control, format (e.g. bidi overrides), lone surrogates and line breaks: a label is one
# plain line, and a lone surrogate would break UTF-8 encoding downstream.
_FORBIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}


@dataclass
class AnnotationError(Exception):
    code: str
    message: str

    def to_message(self) -> dict:
        """The protocol's error message (docs/PROTOCOL.md); never fatal."""
        return {"type": "error", "code": self.code, "message": self.message, "fatal": False}


def _bad(message: str) -> AnnotationError:
    return AnnotationError("bad_annotation", message)


def _number(value: Any, where: str) -> float:
    # bool is an int in Python; JSON true/false is not a number here
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{where} must be a number")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer too large for a float
        raise AnnotationError("out_of_range", f"{where} is out of range") from None
    if not math.isfinite(number):
        raise _bad(f"{where} must be a finite number")
    return number


def _screen_point(value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _bad(f"{where} must be [x, y]")
    x, y = _number(value[0], f"{where}[0]"), _number(value[1], f"{where}[1]")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise AnnotationError("out_of_range", f"{where} must lie in the frame, 0..1")
    return round(x, limits.COORD_DECIMALS), round(y, limits.COORD_DECIMALS)


def _face_point(value: Any, where: str) -> tuple[int, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _bad(f"{where} must be [triangle, u, v]")
    triangle = value[0]
    if isinstance(triangle, bool) or not isinstance(triangle, int):
        raise _bad(f"{where}[0] must be a triangle index (integer)")
    if not 0 <= triangle < limits.FACE_TRIANGLE_COUNT:
        raise AnnotationError("out_of_range", f"{where}[0] must be a triangle index below {limits.FACE_TRIANGLE_COUNT}")
    u, v = _number(value[1], f"{where}[1]"), _number(value[2], f"{where}[2]")
    if min(1.0 - u - v, u, v) < -limits.MAX_EXTRAPOLATION:
        raise AnnotationError("out_of_range", f"{where} lies too far outside its triangle")
    return triangle, round(u, limits.COORD_DECIMALS), round(v, limits.COORD_DECIMALS)


def _point(value: Any, anchor: str, where: str) -> tuple:
    return _screen_point(value, where) if anchor == "screen" else _face_point(value, where)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _bad("shape.text must be a string")
    if len(value) > limits.MAX_TEXT_CHARS:
        raise AnnotationError("too_long", f"shape.text is limited to {limits.MAX_TEXT_CHARS} characters")
    if not value.strip():
        raise _bad("shape.text must not be empty")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise _bad("shape.text must be one line without control characters")
    return value


def _style(raw: dict) -> dict:
    item = raw.get("item")
    if item is not None and (not isinstance(item, str) or item not in PALETTE):
        raise _bad(f"shape.item must be one of {', '.join(PALETTE)}")
    color = raw.get("color")
    if color is not None:
        if not isinstance(color, str) or not _COLOR.fullmatch(color):
            raise _bad("shape.color must be '#rrggbb'")
        color = color.lower()
    return {"item": item, "color": color or (PALETTE[item] if item else DEFAULT_COLOR)}


def _width(raw: dict) -> float:
    if "width" not in raw:
        return limits.DEFAULT_WIDTH
    width = _number(raw["width"], "shape.width")
    if not limits.MIN_WIDTH <= width <= limits.MAX_WIDTH:
        raise AnnotationError("out_of_range", f"shape.width must be {limits.MIN_WIDTH:g}..{limits.MAX_WIDTH:g}")
    return round(width, 2)


def parse_shape(raw: Any) -> dict:
    """The canonical shape (without id, author and time) or AnnotationError."""
    if not isinstance(raw, dict):
        raise _bad("shape must be an object")
    kind = raw.get("kind")
    if not isinstance(kind, str):
        raise _bad("shape.kind must be a string")
    if kind not in SHAPE_KINDS:
        raise AnnotationError("unknown_shape", f"unknown shape kind {kind[:40]!r}; known: {', '.join(SHAPE_KINDS)}")
    anchor = raw.get("anchor", "screen")
    if anchor not in ANCHORS:
        raise _bad("shape.anchor must be 'screen' or 'face'")

    shape: dict[str, Any] = {"kind": kind, "anchor": anchor}
    if kind == "freehand":
        points = raw.get("points")
        if not isinstance(points, (list, tuple)) or not points:
            raise _bad("shape.points must be a non-empty list of points")
        if len(points) > limits.MAX_POINTS_PER_STROKE:
            raise AnnotationError("too_many_points", f"a stroke is limited to {limits.MAX_POINTS_PER_STROKE} points")
        shape["points"] = tuple(_point(p, anchor, f"shape.points[{i}]") for i, p in enumerate(points))
    else:
        for name in _POINT_FIELDS[kind]:
            if name not in raw:
                raise _bad(f"a {kind} needs shape.{name}")
            shape[name] = _point(raw[name], anchor, f"shape.{name}")
    if kind == "text":
        shape["text"] = _text(raw.get("text"))
    shape.update(_style(raw))
    if kind != "text":  # a label's size is fixed by the drawing spec, not by a width
        shape["width"] = _width(raw)
    return shape


def point_count(shape: dict) -> int:
    """How many points a canonical shape stores (the board's size budget)."""
    return len(shape["points"]) if shape["kind"] == "freehand" else len(_POINT_FIELDS[shape["kind"]])


def shape_points(shape: dict) -> list:
    """Every point of a canonical shape, in the shape's own anchoring, in a fixed order
    (freehand: its points; circle: centre, edge; arrow: from, to; text: at)."""
    if shape["kind"] == "freehand":
        return list(shape["points"])
    return [shape[name] for name in _POINT_FIELDS[shape["kind"]]]
