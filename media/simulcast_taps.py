"""What the taps of a simulcast publication (recording, frame processors) see: one stream.

A recording must not lose its picture because the publisher's encoder dropped the top
layer, nor start only once that layer arrives (a browser adds it 15-30 s into a call).
`TapLayers` is fed by every layer and passes on the packets of one, the best arriving;
it moves to another at the first packet of one of that layer's keyframes, renumbering
so the taps see one continuous stream (`StreamRewriter`, as a down-track does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Optional

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .codec_inspect import keyframe_detector
from .rewriter import StreamRewriter
from .taps import PacketTap

logger = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000


class TapLayers:
    def __init__(self) -> None:
        self.taps: list[PacketTap] = []
        self.current: Optional[int] = None  # the layer passed on
        self.wanted: Optional[int] = None  # the layer to move to at its next keyframe
        self._rewriter = StreamRewriter(clock_rate=VIDEO_CLOCK_RATE)
        self._ssrc: Optional[int] = None  # one SSRC for the taps, whichever layer
        self._detectors: dict[str, Optional[Callable[[bytes], bool]]] = {}
        self.switches = 0

    def feed(self, index: int) -> PacketTap:
        """The tap to attach to layer `index`."""
        return _LayerFeed(self, index)

    def on_layer_packet(self, index: int, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None:
        if index != self.current:
            if index != self.wanted or not self._keyframe_start(packet, codec):
                return
            self._rewriter.switch_source(packet.sequence_number, packet.timestamp)
            if self.current is not None:
                self.switches += 1
            self.current = index
        mapped = self._rewriter.map(packet.sequence_number, packet.timestamp)
        if mapped is None:
            return
        if self._ssrc is None:
            self._ssrc = packet.ssrc
        out = RtpPacket(payload_type=packet.payload_type, marker=packet.marker, sequence_number=mapped[0],
                        timestamp=mapped[1], ssrc=self._ssrc, payload=packet.payload)
        out.extensions = packet.extensions
        for tap in list(self.taps):
            try:
                tap.on_packet(out, codec, arrived_at)
            except Exception:
                logger.exception("tap %s failed and was removed", tap)
                self.remove(tap)

    def _keyframe_start(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> bool:
        detect = self._detectors.get(codec.name)
        if codec.name not in self._detectors:
            detect = self._detectors[codec.name] = keyframe_detector(codec.name)
        return detect is not None and detect(packet.payload)

    def add(self, tap: PacketTap) -> None:
        self.taps.append(tap)

    def remove(self, tap: PacketTap) -> None:
        if tap in self.taps:
            self.taps.remove(tap)


class _LayerFeed:
    """Attached to one layer like any tap; closing it is the publication's business."""

    def __init__(self, layers: TapLayers, index: int) -> None:
        self._layers = layers
        self._index = index

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None:
        self._layers.on_layer_packet(self._index, packet, codec, arrived_at)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"_LayerFeed({self._index})"
