"""Which simulcast layer a subscriber's tile needs: the smallest whose picture covers it.

Pages report the size each remote video is drawn at, in device pixels (docs/PROTOCOL.md,
`view`). A layer larger than that costs the subscriber's downlink and decoder and shows
nothing more; the top layers of a video drawn small are better left unsent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

Size = tuple[int, int]  # (width, height) in pixels


def layer_sizes(known: Sequence[Optional[Size]], scale_downs: Sequence[Optional[float]]) -> list[Optional[Size]]:
    """Each layer's picture size, lowest first: as its keyframes said, else worked out from a
    layer that is known by the ladder's scale factors (a layer not sent yet); None if neither."""
    reference = next(((size, scale) for size, scale in zip(known, scale_downs)
                      if size is not None and scale), None)
    sizes: list[Optional[Size]] = []
    for size, scale in zip(known, scale_downs):
        if size is None and reference is not None and scale:
            (width, height), reference_scale = reference
            size = (round(width * reference_scale / scale), round(height * reference_scale / scale))
        sizes.append(size)
    return sizes


def layer_for_view(view: Optional[Size], sizes: Sequence[Optional[Size]]) -> int:
    """The smallest layer whose picture is at least as large as `view` each way (never
    stretched: the doctor's tile of the patient is the clinical picture); the top when none
    is, when nothing is known of the view (a page that does not report) or of a layer's
    size; the lowest for a view of nothing (a hidden tile: a small picture keeps it ready)."""
    top = len(sizes) - 1
    if view is None:
        return top
    width, height = view
    if width <= 0 or height <= 0:
        return 0
    for index, size in enumerate(sizes):
        if size is None:
            return top
        if size[0] >= width and size[1] >= height:
            return index
    return top
