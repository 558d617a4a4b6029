"""Which encodings of the clip a simulcast publisher sends as its layers.

The server asks for layers by RID with a size and a bitrate cap each (`scale_down`: 1, 2,
4 and `max_bitrate` for h, m, l; media/sdp_simulcast.py). The publisher has no encoder:
each layer is an encoding of the same clip at that size (`layer_specs`), with the same
frames and keyframe positions, so a frame index names the same picture on every layer and
the receivers' frame matching holds across layer switches. A layer's bitrate is what a
browser's encoder spends at that size, up to the cap, as Chrome does when the page sets
`maxBitrate` per encoding.

`pick_rungs` takes, for each size an offer wants, the prepared encoding of the closest
size (by ratio), keeping the layers distinct and in falling bitrate: two layers on one
encoding would make the server's choice between them meaningless. Where a size is not
prepared, it says so (`notes`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from loadtest.clips import ClipSpec, load_or_encode, load_or_encode_variants
from loadtest.preencoded import EncodedClip

# What the server asks for (media/sdp_simulcast.py SIMULCAST_LADDER), highest first, as
# (scale_down, max_bitrate): prepared before the offer arrives, which then names the layers it wants.
DEFAULT_LAYERS: tuple[tuple[float, int], ...] = ((1, 1_500_000), (2, 500_000), (4, 150_000))
# A smaller layer of the same picture costs its share of the pixels to this power (a rule of
# thumb: at 720p and 1.5 Mbit/s it gives 530 / 187 kbit/s, which the offer's caps bring to
# libwebrtc's targets for 640x360 / 320x180, 500 / 150).
PIXEL_EXPONENT = 0.75
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


def layer_specs(spec: ClipSpec, layers: Sequence[tuple[float, int]] = DEFAULT_LAYERS) -> list[ClipSpec]:
    """The clip at each (scale_down, max_bitrate), highest first: same frames, same keyframe positions.

    A layer's bitrate is the full clip's scaled by its share of the pixels^PIXEL_EXPONENT,
    never over the cap; a layer of the full size and rate is the clip itself.
    """
    def even(x: float) -> int:
        return max(2, int(round(x / 2)) * 2)

    out = []
    for scale_down, cap in layers:
        scale = 1 / max(1.0, scale_down)
        bitrate = min(cap, int(spec.bitrate * (scale * scale) ** PIXEL_EXPONENT))
        out.append(replace(spec, bitrate=bitrate, width=even(spec.width * scale), height=even(spec.height * scale)))
    return out


def prepare_layers(spec: ClipSpec, full: EncodedClip, full_keyframes: Optional[EncodedClip],
                   encoded: dict[ClipSpec, tuple[EncodedClip, Optional[EncodedClip]]], cache_dir: Optional[Path],
                   keyframe_variants: bool, layers: Sequence[tuple[float, int]] = DEFAULT_LAYERS) -> list[LayerClip]:
    """The layer encodings for `layers` ((scale_down, max_bitrate), highest first) of `spec`'s clip.

    `full` (+ its keyframe variants) serves a layer equal to `spec`; `encoded` holds
    encodings already made (the adaptive publisher's ladder) by spec and receives those
    made here.
    """
    out = []
    for rung in layer_specs(spec, layers):
        if rung == spec:
            clip, keyframes = full, full_keyframes
        elif rung in encoded:
            clip, keyframes = encoded[rung]
        else:
            clip = load_or_encode(rung, cache_dir)
            keyframes = load_or_encode_variants(rung, clip, cache_dir) if keyframe_variants else None
            encoded[rung] = (clip, keyframes)
        out.append(LayerClip(scale=rung.width / spec.width, width=rung.width, height=rung.height, clip=clip,
                             keyframes=keyframes))
    return out
