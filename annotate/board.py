"""The drawing over one room's patient video: ordered shapes, a version, operations.

The signalling layer calls `board.apply(author, message)` for each client `annotate`
message and broadcasts the returned event to the room (the sender included), or sends
the AnnotationError's `to_message()` back to the sender. A late joiner gets
`board.snapshot()`. Every accepted operation produces exactly one event and raises the
version by one; a client applies events in version order and asks for a snapshot when
it sees a gap. A rejected operation changes nothing.

Operations (client → server, `type` "annotate"):
    {"op": "add", "shape": {...}, "ref": "c-17"}   ref: optional client tag, echoed
    {"op": "undo"}                                  removes the sender's newest shape
    {"op": "clear"}                                 everything (moderators only)
    {"op": "clear", "shapes_of": "<author>"}        one author's shapes (own, or a moderator)

Events (server → room, `type` "annotation"): `op`, `version`, `t_ms` (session clock, for
the recorder), `author` (who did it) and `shape` for add, `ids` (removed) for undo and
clear, `shapes_of` for clear.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from annotate import limits
from annotate.limits import AuthorRateLimiter
from annotate.model import AnnotationError, parse_shape, point_count, shape_points


def _plain_string(value: object, max_chars: int) -> bool:
    """A string of at most `max_chars` that UTF-8 can carry. A lone surrogate (JSON's "\\ud800"
    escape makes one) would be echoed in the event, and the room's recording, which writes
    events as UTF-8, would stop on it."""
    if not isinstance(value, str) or len(value) > max_chars:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _session_clock() -> Callable[[], int]:
    start = time.monotonic()
    return lambda: int((time.monotonic() - start) * 1000)


class AnnotationBoard:
    def __init__(self, now_ms: Callable[[], int] | None = None, limiter: AuthorRateLimiter | None = None) -> None:
        # now_ms: the room's session clock, shared with the recorder so marks line up
        # with the media; by default milliseconds since the board was created.
        self._now_ms = now_ms or _session_clock()
        self._limiter = limiter or AuthorRateLimiter()
        self._shapes: dict[str, dict] = {}  # id -> shape, in drawing (z) order
        self._points = 0
        self._next_id = 1
        self.version = 0
        self._face_triangles: tuple[int, frozenset[int]] = (0, frozenset())  # (version, triangles)

    def apply(self, author: str, message: dict, *, moderator: bool = False) -> dict:
        """The event to broadcast, or AnnotationError. `author` is the sender's stable
        identity (it survives reconnects, so undo still works after one); `moderator`
        allows clearing other authors' shapes."""
        if not isinstance(message, dict):
            raise AnnotationError("bad_annotation", "an annotation message must be an object")
        op = message.get("op")
        if op == "add":
            return self._add(author, message)
        if op == "undo":
            return self._undo(author)
        if op == "clear":
            return self._clear(author, message, moderator)
        raise AnnotationError("bad_annotation", "op must be 'add', 'undo' or 'clear'")

    def snapshot(self) -> dict:
        """The whole drawing for a late joiner (or a reconnecting page)."""
        return {"type": "annotation-snapshot", "version": self.version, "t_ms": self._now_ms(),
                "shapes": [dict(shape) for shape in self._shapes.values()]}

    def snapshot_parts(self, max_bytes: int) -> list[dict]:
        """The snapshot split so that each part's JSON stays under max_bytes (a recording's event
        limit; a full board is ~0.5 MB). Part 0 replaces the drawing, later parts (same version
        and t_ms) add to it. A single shape came in one client message, so it fits on its own."""
        whole = self.snapshot()
        overhead = _json_size({**whole, "shapes": [], "part": 999, "parts": 999})
        groups: list[list[dict]] = [[]]
        size = overhead
        for shape in whole["shapes"]:
            shape_size = _json_size(shape) + 1  # and its comma
            if groups[-1] and size + shape_size > max_bytes:
                groups.append([])
                size = overhead
            groups[-1].append(shape)
            size += shape_size
        return [{**whole, "shapes": shapes, "part": i, "parts": len(groups)} for i, shapes in enumerate(groups)]

    def face_triangles(self) -> frozenset[int]:
        """The face-mesh triangles the face-anchored shapes lie on: what a page needs of
        the landmarks to draw them (annotate/face_relay.py). Cached per version, since it
        is asked at the landmark rate and the board changes far less often."""
        version, triangles = self._face_triangles
        if version != self.version:
            triangles = frozenset(point[0] for shape in self._shapes.values() if shape["anchor"] == "face"
                                  for point in shape_points(shape))
            self._face_triangles = (self.version, triangles)
        return triangles

    def _add(self, author: str, message: dict) -> dict:
        ref = message.get("ref")
        if ref is not None and not _plain_string(ref, limits.MAX_REF_CHARS):
            raise AnnotationError("bad_annotation",
                                  f"ref must be a string of at most {limits.MAX_REF_CHARS} characters, all UTF-8")
        shape = parse_shape(message.get("shape"))
        points = point_count(shape)
        self._take(author, limits.operation_cost(points))
        if len(self._shapes) >= limits.MAX_SHAPES_PER_BOARD or self._points + points > limits.MAX_POINTS_PER_BOARD:
            raise AnnotationError("board_full", f"a board holds at most {limits.MAX_SHAPES_PER_BOARD} shapes "
                                                f"and {limits.MAX_POINTS_PER_BOARD} points; clear some first")
        now = self._now_ms()
        shape = {"id": f"a{self._next_id}", "author": author, "t_ms": now, **shape}
        self._next_id += 1
        self._shapes[shape["id"]] = shape
        self._points += points
        extra: dict[str, Any] = {} if ref is None else {"ref": ref}
        return self._event("add", author, now, shape=dict(shape), **extra)

    def _undo(self, author: str) -> dict:
        self._take(author, 1.0)
        newest = next((s for s in reversed(self._shapes.values()) if s["author"] == author), None)
        if newest is None:
            raise AnnotationError("nothing_to_undo", "you have no shapes on the board")
        self._remove([newest["id"]])
        return self._event("undo", author, self._now_ms(), ids=[newest["id"]])

    def _clear(self, author: str, message: dict, moderator: bool) -> dict:
        shapes_of = message.get("shapes_of")
        if shapes_of is not None and not _plain_string(shapes_of, limits.MAX_AUTHOR_CHARS):
            raise AnnotationError("bad_annotation", f"shapes_of must be an author of at most "
                                                    f"{limits.MAX_AUTHOR_CHARS} characters, all UTF-8")
        if shapes_of != author and not moderator:
            raise AnnotationError("forbidden", "only a moderator may clear other authors' shapes")
        self._take(author, 1.0)
        ids = [i for i, s in self._shapes.items() if shapes_of is None or s["author"] == shapes_of]
        self._remove(ids)
        return self._event("clear", author, self._now_ms(), ids=ids, shapes_of=shapes_of)

    def _take(self, author: str, cost: float) -> None:
        if not self._limiter.take(author, cost):
            raise AnnotationError("rate_limited", "too many annotations; slow down")

    def _remove(self, ids: list[str]) -> None:
        for shape_id in ids:
            self._points -= point_count(self._shapes.pop(shape_id))

    def _event(self, op: str, author: str, t_ms: int, **fields: Any) -> dict:
        self.version += 1
        return {"type": "annotation", "op": op, "version": self.version, "t_ms": t_ms, "author": author, **fields}


def _json_size(value: object) -> int:
    """Bytes as the recorder writes JSON (compact, UTF-8)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
