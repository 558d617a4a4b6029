"""The drawing as it stood at any moment of a recording.

Replays recorded `annotation` events (add / undo / clear, each with the session
clock t_ms) so an export or a replay can draw exactly what was on screen.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class AnnotationTimeline:
    def __init__(self, events: Iterable[dict]) -> None:
        kinds = ("annotation", "annotation-snapshot")
        ordered = sorted((e for e in events if e.get("type") in kinds), key=lambda e: (e["t_ms"], e["version"]))
        self._times: list[int] = []
        self._states: list[tuple[dict, ...]] = []
        shapes: dict[str, dict] = {}
        for event in ordered:
            if event["type"] == "annotation-snapshot":  # what was on the board when recording began
                if event.get("part", 0) == 0:  # a large drawing comes in parts: later ones add to the first
                    shapes = {}
                shapes.update((shape["id"], shape) for shape in event["shapes"])
            elif event["op"] == "add":
                shapes[event["shape"]["id"]] = event["shape"]
            else:
                for shape_id in event.get("ids", []):
                    shapes.pop(shape_id, None)
            self._times.append(event["t_ms"])
            self._states.append(tuple(shapes.values()))

    def shapes_at(self, t_ms: int) -> tuple[dict, ...]:
        """The shapes on the board at session time t_ms (in drawing order)."""
        index = bisect.bisect_right(self._times, t_ms) - 1
        return self._states[index] if index >= 0 else ()

    def __len__(self) -> int:
        return len(self._times)
