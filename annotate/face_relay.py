"""What the live pages need to draw face-anchored marks on the face as it moves.

A face-anchored point is [t, u, v] on triangle t of the face mesh (anchoring.py); a
page resolves it with that triangle's three corner landmarks of the newest analysed
frame. Two analysis messages carry what is needed (docs/PROTOCOL.md, "Annotation"):

- `face-mesh`: the triangle table, FACE_TRIANGLES itself (one source of truth: the
  pages never keep a copy), sent once to a session before the first landmarks it gets;
- `face-landmarks`: for participants that get no `face-metrics` (the patient's phone),
  only the landmarks the board's face-anchored marks use, and only while there are
  such marks: typically a few dozen points instead of 478 at 5 Hz, and nothing at all
  for a consultation without face-anchored marks. Clinicians resolve with the full
  landmark set their `face-metrics` already carry.

Nothing here imports signalling/: signalling/live_analysis.py asks for the messages.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Optional

from annotate.board import AnnotationBoard


@lru_cache(maxsize=1)
def face_triangles() -> tuple[tuple[int, int, int], ...]:
    # mediapipe (through anchoring.py) is loaded only once a page needs the table
    from annotate.anchoring import FACE_TRIANGLES
    return tuple((int(a), int(b), int(c)) for a, b, c in FACE_TRIANGLES.tolist())


def mesh_message(processor: str, participant_id: str, t_ms: int) -> dict[str, Any]:
    """The triangle table, as the analysis message a page keeps for resolving anchors."""
    return {"type": "analysis", "processor": processor, "participant": participant_id, "t_ms": t_ms,
            "kind": "face-mesh", "triangles": [list(row) for row in face_triangles()]}


class FaceLandmarkRelay:
    """Turns the clinicians' `face-metrics` into the patient page's `face-landmarks`."""

    def __init__(self, board: AnnotationBoard) -> None:
        self._board = board
        self._needed: tuple[frozenset[int], tuple[int, ...]] = (frozenset(), ())

    def needed(self) -> tuple[int, ...]:
        """Landmark indices (ascending) the board's face-anchored marks are resolved with."""
        triangles = self._board.face_triangles()
        if triangles is not self._needed[0]:  # the board hands out the same set until it changes
            table = face_triangles() if triangles else ()
            self._needed = (triangles, tuple(sorted({i for t in triangles for i in table[t]})))
        return self._needed[1]

    def landmarks_message(self, metrics: dict[str, Any]) -> Optional[dict[str, Any]]:
        """For a `face-metrics` analysis message: the `face-landmarks` message with the
        needed landmarks as [index, x, y] (null without a face), or None when the board
        holds no face-anchored marks."""
        needed = self.needed()
        if not needed:
            return None
        face = metrics.get("face")
        landmarks = face.get("landmarks") if isinstance(face, dict) else None
        points = None
        if landmarks:
            points = [[i, *landmarks[i][:2]] for i in needed if i < len(landmarks)]
        return {"type": "analysis", "processor": metrics["processor"], "participant": metrics["participant"],
                "t_ms": metrics["t_ms"], "kind": "face-landmarks", "landmarks": points}
