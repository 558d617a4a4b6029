"""Live watermarking on the server for one room: which subscriber gets a marked copy of
which video track, and the decoders those copies share.

The control plane supplies the policy (roles and issued watermark ids are its business):
`policy(publisher id, subscriber id)` returns the viewer's LiveMark, None to forward the
track untouched, or raises LookupError when the pair must be marked but cannot be (the
video is then withheld, never sent unmarked). MediaRoom asks `source_for` what to attach
a subscriber's video down-track to.

Cost control: each published track is decoded once however many viewers get a marked
copy (and not at all when nobody does); when frame processors already decode the track
(`shared_decoder`), their decoder is reused. Each marked copy then costs one mark +
one encode in its own worker (media/watermark_variant.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Union

from watermark.embed import Watermarker

from .taps import DecodedFrameTap
from .watermark_variant import WatermarkVariant

if TYPE_CHECKING:
    from .published_track import PublishedTrack

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveMark:
    """What one viewer's copies carry: the forensic id (under `key`) and the visible label."""

    key: bytes
    wm_id: int
    label: Union[str, Callable[[int], str]]


MarkPolicy = Callable[[str, str], Optional[LiveMark]]
SharedDecoder = Callable[[str], Optional[DecodedFrameTap]]  # publisher id -> a decoder already on its video


@dataclass
class _Decoder:
    tap: DecodedFrameTap
    owned: bool  # ours to close; a processor host's decoder is only borrowed
    users: set[WatermarkVariant] = field(default_factory=set)


class WatermarkHost:
    def __init__(self, policy: MarkPolicy, *, shared_decoder: SharedDecoder = lambda publisher_id: None,
                 max_fps: float = 30.0) -> None:
        self._policy = policy
        self._shared_decoder = shared_decoder
        self._max_fps = max_fps
        self._variants: dict[tuple["PublishedTrack", str], WatermarkVariant] = {}
        self._decoders: dict["PublishedTrack", _Decoder] = {}

    def source_for(self, track: "PublishedTrack",
                   subscriber_id: str) -> Union["PublishedTrack", WatermarkVariant, None]:
        """The track itself (forward), this subscriber's marked copy, or None (withhold)."""
        if track.kind != "video":
            return track
        try:
            mark = self._policy(track.participant_id, subscriber_id)
        except LookupError as exc:
            logger.error("withholding %s's video from %s: %s", track.participant_id, subscriber_id, exc)
            return None
        if mark is None:
            return track
        existing = self._variants.get((track, subscriber_id))
        if existing is not None and not existing.stopped:
            return existing
        variant = WatermarkVariant(track, viewer_id=subscriber_id,
                                   make_marker=lambda: Watermarker(mark.key, mark.wm_id, mark.label).mark_i420,
                                   max_fps=self._max_fps, on_idle=self._release)
        decoder = self._decoder(track)
        decoder.users.add(variant)
        decoder.tap.add_frame_consumer(variant.offer)
        self._variants[(track, subscriber_id)] = variant
        return variant

    def _decoder(self, track: "PublishedTrack") -> _Decoder:
        decoder = self._decoders.get(track)
        if decoder is None:
            shared = self._shared_decoder(track.participant_id)
            if shared is not None:
                decoder = _Decoder(shared, owned=False)
            else:
                tap = DecodedFrameTap(request_keyframe=track.request_keyframe, name=f"wm-decode-{track.participant_id}")
                track.add_tap(tap)
                decoder = _Decoder(tap, owned=True)
            self._decoders[track] = decoder
        return decoder

    def _release(self, variant: WatermarkVariant) -> None:
        """A copy nobody watches any more: stop its worker; the last copy of a track frees our decoder."""
        variant.stop()
        key = (variant.track, variant.viewer_id)
        if self._variants.get(key) is variant:
            del self._variants[key]
        decoder = self._decoders.get(variant.track)
        if decoder is None:
            return
        decoder.tap.remove_frame_consumer(variant.offer)
        decoder.users.discard(variant)
        if not decoder.users:
            del self._decoders[variant.track]
            if decoder.owned:
                variant.track.remove_tap(decoder.tap)
                decoder.tap.close()

    @property
    def variants(self) -> list[WatermarkVariant]:
        return list(self._variants.values())

    def variant(self, publisher_id: str, subscriber_id: str) -> Optional[WatermarkVariant]:
        return next((v for (t, s), v in self._variants.items()
                     if t.participant_id == publisher_id and s == subscriber_id), None)

    def decoders(self) -> int:
        return len(self._decoders)

    def close(self) -> None:
        for variant in list(self._variants.values()):
            self._release(variant)
