from annotate.timeline import AnnotationTimeline

A = {"id": "a1", "kind": "arrow"}
B = {"id": "a2", "kind": "circle"}
EVENTS = [
    {"type": "annotation", "op": "add", "version": 1, "t_ms": 1000, "shape": A},
    {"type": "participant-joined", "t_ms": 1500},
    {"type": "annotation", "op": "add", "version": 2, "t_ms": 2000, "shape": B},
    {"type": "annotation", "op": "undo", "version": 3, "t_ms": 3000, "ids": ["a2"]},
    {"type": "annotation", "op": "clear", "version": 4, "t_ms": 4000, "ids": ["a1"]},
]


def test_shapes_at_each_moment():
    timeline = AnnotationTimeline(reversed(EVENTS))  # order of arrival does not matter
    assert timeline.shapes_at(999) == ()
    assert timeline.shapes_at(1000) == (A,)
    assert timeline.shapes_at(2500) == (A, B)
    assert timeline.shapes_at(3000) == (A,)
    assert timeline.shapes_at(10_000) == ()
    assert len(timeline) == 4


def test_a_snapshot_sets_the_board_as_it_was_when_recording_began():
    events = [{"type": "annotation-snapshot", "version": 5, "t_ms": 0, "shapes": [A]}, EVENTS[2]]
    timeline = AnnotationTimeline(events)
    assert timeline.shapes_at(0) == (A,)
    assert timeline.shapes_at(2000) == (A, B)
