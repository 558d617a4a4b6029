"""annotate/ never imports the control plane, and the part the control plane calls on
every message (board, model, limits) stays free of mediapipe, OpenCV and numpy."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("mediapipe", "cv2", "numpy", "matplotlib")


def loaded_after(imports: str, watched: tuple[str, ...]) -> list[str]:
    code = f"import sys; {imports}; print(' '.join(m for m in {watched!r} if m in sys.modules))"
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()


def test_the_board_is_light():
    assert loaded_after("import annotate.board", HEAVY + ("signalling",)) == []
    # the landmark relay loads the face mesh (mediapipe) only once a page needs the table
    assert loaded_after("import annotate.face_relay", HEAVY + ("signalling",)) == []


def test_nothing_imports_signalling():
    assert loaded_after("import annotate.board, annotate.anchoring, annotate.face_relay",
                        ("signalling", "media")) == []
    # the renderer shares the burn-in font with the visible watermark (media/fonts.py), nothing else of media/
    code = "import sys, annotate.render; print(' '.join(m for m in sys.modules if m.split('.')[0] == 'media'))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert sorted(loaded) == ["media", "media.fonts"]
    assert loaded_after("import annotate.render", ("signalling", "recorder")) == []
