"""Which encodings of the clip a simulcast publisher sends as its layers.

The server asks for layers by RID with a size each (`scale_down`: 1, 2, 4 for h, m, l;
media/sdp_simulcast.py). The publisher has no encoder: its layers are rungs of the clip's
ladder (loadtest.clips.ladder_specs: the same frames and keyframe positions at lower
bitrates and sizes), so a frame index names the same picture on every layer and the
receivers' frame matching holds across layer switches.

`pick_rungs` takes, for each wanted size, the rung of the closest size (by ratio), keeping
the layers distinct and in falling bitrate: two layers on one encoding would make the
server's choice between them meaningless. Where a size is not on the ladder, it says so
(`notes`). With the default ladder (sizes 1, 1, 2/3, 1/2) h, m, l are the full-size
full-rate rung, the 2/3-size one and the half-size one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from loadtest.clips import ClipSpec, ladder_specs, load_or_encode, load_or_encode_variants
from loadtest.preencoded import EncodedClip

# What the server asks for (media/sdp_simulcast.py SIMULCAST_LADDER), highest first: prepared
# before the offer arrives, which then names the layers it wants.
DEFAULT_SCALE_DOWNS = (1, 2, 4)
SIZE_TOLERANCE = 0.05  # a rung within 5 % of the wanted size counts as that size


@dataclass(frozen=True)
class LayerClip:
    """One layer's encoding: the clip, its keyframe variants (to answer PLI), and its size."""

    scale: float  # of the full size
    width: int
    height: int
    clip: EncodedClip
    keyframes: Optional[EncodedClip]

    @property
    def bitrate(self) -> float:
        return self.clip.bitrate


def pick_rungs(scales: Sequence[float], bitrates: Sequence[float], wanted: Sequence[float],
               names: Optional[Sequence[str]] = None) -> tuple[list[int], list[str]]:
    """For each wanted scale (highest first), the index of a rung, distinct and of falling bitrate.

    Minimises the summed |log(rung scale / wanted scale)|; ties go to the higher bitrates.
    Fewer rungs than layers: the lowest layers share the last rung (noted). Returns the
    indices and a note for each layer whose rung is not of the size asked for.
    """
    if not scales or len(scales) != len(bitrates):
        raise ValueError("need one bitrate per rung, and at least one rung")
    order = sorted(range(len(scales)), key=lambda i: -bitrates[i])  # highest bitrate first
    if len(order) >= len(wanted):
        def cost(combo: tuple[int, ...]) -> tuple[float, float]:
            error = sum(abs(math.log(scales[i] / w)) for i, w in zip(combo, wanted))
            return round(error, 9), -sum(bitrates[i] for i in combo)

        best = min(itertools.combinations(order, len(wanted)), key=cost)
        picked = list(best)
    else:
        picked = order + [order[-1]] * (len(wanted) - len(order))
    notes = []
    for layer, (index, want) in enumerate(zip(picked, wanted)):
        if abs(scales[index] / want - 1) > SIZE_TOLERANCE:
            name = names[layer] if names is not None else str(layer)
            notes.append(f"layer {name}: wanted 1/{1 / want:g} of the size, the ladder's closest distinct "
                         f"rung is {scales[index]:.3g}")
    if len(set(picked)) < len(picked):
        notes.append("fewer ladder rungs than layers: the lowest layers share one encoding")
    return picked, notes


def layers_for_offer(prepared: Sequence[LayerClip], scale_downs: Sequence[float],
                     rids: Optional[Sequence[str]] = None) -> tuple[list[LayerClip], list[str]]:
    """The prepared layer encodings for the layers an offer asks for (highest first)."""
    picked, notes = pick_rungs([layer.scale for layer in prepared], [layer.bitrate for layer in prepared],
                               [1 / max(1.0, s) for s in scale_downs], rids)
    return [prepared[i] for i in picked], notes


def prepare_layers(spec: ClipSpec, full: EncodedClip, full_keyframes: Optional[EncodedClip],
                   encoded: dict[int, tuple[EncodedClip, Optional[EncodedClip]]], cache_dir: Optional[Path],
                   keyframe_variants: bool, scale_downs: Sequence[float] = DEFAULT_SCALE_DOWNS
                   ) -> tuple[list[LayerClip], list[str]]:
    """The layer encodings for `scale_downs` (highest first) from the ladder of `spec`.

    `full` (+ its keyframe variants) is rung 0; `encoded` holds rungs already encoded by
    ladder index (the adaptive publisher's) and receives those encoded here.
    """
    specs = ladder_specs(spec)
    picked, notes = pick_rungs([s.width / spec.width for s in specs], [s.bitrate for s in specs],
                               [1 / max(1.0, d) for d in scale_downs], [f"1/{d:g}" for d in scale_downs])
    layers = []
    for index in picked:
        rung = specs[index]
        if index == 0:
            clip, keyframes = full, full_keyframes
        elif index in encoded:
            clip, keyframes = encoded[index]
        else:
            clip = load_or_encode(rung, cache_dir)
            keyframes = load_or_encode_variants(rung, clip, cache_dir) if keyframe_variants else None
            encoded[index] = (clip, keyframes)
        layers.append(LayerClip(scale=rung.width / spec.width, width=rung.width, height=rung.height, clip=clip,
                                keyframes=keyframes))
    return layers, notes
