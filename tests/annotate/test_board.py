"""Board operations: add / undo / clear per author, versions and snapshots for late
joiners, the per-author flood limit, and the capacity limits."""

from __future__ import annotations

import json

import pytest

from annotate import limits
from annotate.board import AnnotationBoard
from annotate.limits import AuthorRateLimiter
from annotate.model import AnnotationError


class FakeClock:
    def __init__(self) -> None:
        self.s = 0.0

    def ms(self) -> int:
        return int(self.s * 1000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def board(clock) -> AnnotationBoard:
    return AnnotationBoard(now_ms=clock.ms, limiter=AuthorRateLimiter(clock=lambda: clock.s))


def add(board: AnnotationBoard, author: str, x: float = 0.5, **extra) -> dict:
    return board.apply(author, {"type": "annotate", "op": "add",
                                "shape": {"kind": "circle", "center": [x, 0.5], "edge": [x, 0.6]}, **extra})


def code_of(board: AnnotationBoard, author: str, message, **kwargs) -> str:
    with pytest.raises(AnnotationError) as err:
        board.apply(author, message, **kwargs)
    return err.value.code


def ids(board: AnnotationBoard) -> list[str]:
    return [s["id"] for s in board.snapshot()["shapes"]]


def test_add_event_carries_version_time_author_and_the_stored_shape(board, clock):
    clock.s = 12.3456
    event = add(board, "doctor-1", ref="c-1")
    assert event == {"type": "annotation", "op": "add", "version": 1, "t_ms": 12345, "author": "doctor-1", "ref": "c-1",
                     "shape": {"id": "a1", "author": "doctor-1", "t_ms": 12345, "kind": "circle", "anchor": "screen",
                               "center": (0.5, 0.5), "edge": (0.5, 0.6), "item": None, "color": "#ffffff",
                               "width": limits.DEFAULT_WIDTH}}
    assert "ref" not in add(board, "doctor-1")
    json.dumps(event, allow_nan=False)


def test_undo_removes_only_the_authors_newest_shape(board):
    add(board, "doctor")            # a1
    add(board, "expert")            # a2
    add(board, "doctor")            # a3
    add(board, "expert")            # a4
    event = board.apply("doctor", {"op": "undo"})
    assert (event["op"], event["ids"], event["author"], event["version"]) == ("undo", ["a3"], "doctor", 5)
    assert ids(board) == ["a1", "a2", "a4"]
    board.apply("doctor", {"op": "undo"})
    assert ids(board) == ["a2", "a4"]
    assert code_of(board, "doctor", {"op": "undo"}) == "nothing_to_undo"
    assert code_of(board, "patient", {"op": "undo"}) == "nothing_to_undo"
    assert ids(board) == ["a2", "a4"] and board.version == 6


def test_ids_are_never_reused(board):
    add(board, "doctor")
    board.apply("doctor", {"op": "undo"})
    assert add(board, "doctor")["shape"]["id"] == "a2"


def test_clear_all_needs_a_moderator(board):
    add(board, "doctor")
    add(board, "expert")
    assert code_of(board, "expert", {"op": "clear"}) == "forbidden"
    assert len(ids(board)) == 2
    event = board.apply("doctor", {"op": "clear"}, moderator=True)
    assert (event["op"], event["ids"], event["shapes_of"]) == ("clear", ["a1", "a2"], None)
    assert ids(board) == []


def test_clear_one_authors_shapes(board):
    add(board, "doctor")
    add(board, "expert")
    add(board, "expert")
    assert code_of(board, "expert", {"op": "clear", "shapes_of": "doctor"}) == "forbidden"
    event = board.apply("expert", {"op": "clear", "shapes_of": "expert"})  # one's own: no moderator needed
    assert (event["ids"], event["shapes_of"]) == (["a2", "a3"], "expert")
    assert ids(board) == ["a1"]
    add(board, "expert")
    assert board.apply("doctor", {"op": "clear", "shapes_of": "expert"}, moderator=True)["ids"] == ["a4"]
    assert ids(board) == ["a1"]
    # clearing an empty selection is harmless and still an event
    assert board.apply("expert", {"op": "clear", "shapes_of": "expert"})["ids"] == []


@pytest.mark.parametrize("message", [
    "add", None, [], {}, {"op": "redo"}, {"op": 1},
    {"op": "add"}, {"op": "add", "shape": []},
    {"op": "add", "ref": 5, "shape": {"kind": "text", "at": [0, 0], "text": "x"}},
    {"op": "add", "ref": "r" * (limits.MAX_REF_CHARS + 1), "shape": {"kind": "text", "at": [0, 0], "text": "x"}},
    {"op": "clear", "shapes_of": 7},
    {"op": "clear", "shapes_of": "x" * (limits.MAX_AUTHOR_CHARS + 1)},
])
def test_malformed_operations(board, message):
    assert code_of(board, "doctor", message, moderator=True) == "bad_annotation"
    assert board.version == 0


def test_rejected_operations_change_nothing(board):
    add(board, "doctor")
    before = board.snapshot()
    for message in ({"op": "add", "shape": {"kind": "freehand", "points": [[2, 2]]}},
                    {"op": "add", "shape": {"kind": "hexagon"}},
                    {"op": "clear"}):
        with pytest.raises(AnnotationError):
            board.apply("expert", message)
    assert board.snapshot() == before


def replay(events: list[dict]) -> dict[str, dict]:
    """What a page does with the broadcast events (it applies them in version order)."""
    shapes: dict[str, dict] = {}
    for event in json.loads(json.dumps(events)):
        if event["op"] == "add":
            shapes[event["shape"]["id"]] = event["shape"]
        else:
            for shape_id in event["ids"]:
                del shapes[shape_id]
    return shapes


def test_late_joiner_snapshot_equals_the_replayed_events(board, clock):
    events = []
    for i in range(6):
        clock.s += 1
        events.append(add(board, ("doctor", "expert")[i % 2], x=i / 10))
    events.append(board.apply("expert", {"op": "undo"}))
    events.append(board.apply("doctor", {"op": "clear", "shapes_of": "doctor"}))
    events.append(add(board, "doctor", x=0.9))
    versions = [e["version"] for e in events]
    assert versions == list(range(1, len(events) + 1))
    assert [e["t_ms"] for e in events] == sorted(e["t_ms"] for e in events)

    snapshot = json.loads(json.dumps(board.snapshot(), allow_nan=False))
    assert snapshot["type"] == "annotation-snapshot" and snapshot["version"] == versions[-1]
    assert snapshot["shapes"] == list(replay(events).values())
    assert [s["author"] for s in snapshot["shapes"]] == ["expert", "expert", "doctor"]


def test_handed_out_shapes_cannot_change_the_board(board):
    event = add(board, "doctor")
    event["shape"]["color"] = "#000000"
    board.snapshot()["shapes"][0]["kind"] = "text"
    assert board.snapshot()["shapes"][0] == {**event["shape"], "color": "#ffffff"}


def test_flood_is_rate_limited_per_author(board, clock):
    accepted = 0
    while True:
        try:
            add(board, "expert")
        except AnnotationError as e:
            assert e.code == "rate_limited"
            break
        accepted += 1
    assert accepted == limits.BURST
    version = board.version
    assert code_of(board, "expert", {"op": "undo"}) == "rate_limited"
    assert board.version == version
    add(board, "doctor")  # another author is not affected
    clock.s += 1.0        # refills at the sustained rate
    for _ in range(int(limits.RATE_PER_S)):
        add(board, "expert")
    assert code_of(board, "expert", {"op": "undo"}) == "rate_limited"


def test_big_strokes_cost_more(board):
    stroke = {"op": "add", "shape": {"kind": "freehand", "points": [[0.5, 0.5]] * limits.MAX_POINTS_PER_STROKE}}
    accepted = 0
    with pytest.raises(AnnotationError, match="too many annotations"):
        while True:
            board.apply("expert", stroke)
            accepted += 1
    assert accepted == int(limits.BURST // limits.operation_cost(limits.MAX_POINTS_PER_STROKE))


def test_board_full_by_shapes(clock):
    board = AnnotationBoard(now_ms=clock.ms, limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    for _ in range(limits.MAX_SHAPES_PER_BOARD):
        add(board, "doctor")
    assert code_of(board, "doctor", {"op": "add", "shape": {"kind": "text", "at": [0, 0], "text": "x"}}) == "board_full"
    board.apply("doctor", {"op": "undo"})
    add(board, "doctor")


def test_board_full_by_points(clock):
    board = AnnotationBoard(now_ms=clock.ms, limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    stroke = {"op": "add", "shape": {"kind": "freehand", "points": [[0.5, 0.5]] * limits.MAX_POINTS_PER_STROKE}}
    for _ in range(limits.MAX_POINTS_PER_BOARD // limits.MAX_POINTS_PER_STROKE):
        board.apply("doctor", stroke)
    assert code_of(board, "doctor", {"op": "add", "shape": {"kind": "text", "at": [0, 0], "text": "x"}}) == "board_full"
    board.apply("doctor", {"op": "clear", "shapes_of": "doctor"})
    board.apply("doctor", stroke)


def test_default_session_clock_counts_from_the_board_start():
    event = AnnotationBoard().apply("doctor", {"op": "add", "shape": {"kind": "text", "at": [0, 0], "text": "x"}})
    assert 0 <= event["t_ms"] < 1000
