"""A fake subscriber for the packet path's sources (media/packet_path.py `PacketSink`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from media.packet_path import DownTrackSource
from media.redundancy import LossEstimate


@dataclass(frozen=True)
class Forwarded:
    """One packet as a sink was handed it: the header fields and payload read at that moment
    (a source may build or reuse packet objects), the codec it came with, and the flags."""

    sequence_number: int
    payload_type: int
    ssrc: int
    timestamp: int
    marker: int
    payload: bytes
    codec: RTCRtpCodecParameters
    keyframe_start: bool
    late: bool


class FakeSink:
    """A PacketSink that keeps what it is sent: `received` (sequence number, keyframe start) and
    `forwarded` (everything, as `Forwarded`).

    `red`: whether it negotiated audio RED (`carries` says so for the source's RED codec; any
    other codec it carries). `fails`: an exception its `forward` raises, as a broken subscriber's.
    """

    def __init__(self, *, red: bool = False, fails: Optional[Exception] = None) -> None:
        self.source: Optional[DownTrackSource] = None
        self.feed: Optional[DownTrackSource] = None
        self.started = True
        self.stopped = False
        self.paused = False
        self.remb_bitrate: Optional[int] = None
        self.downlink_loss = LossEstimate()
        self.layer_ceiling = 2
        self.red = red
        self.fails = fails
        self.received: list[tuple[int, bool]] = []
        self.forwarded: list[Forwarded] = []
        self.restarts = 0
        self.skipped: list[tuple[int, int]] = []

    async def forward(self, packet: RtpPacket, codec: RTCRtpCodecParameters, keyframe_start: bool,
                      abs_send_time: int, now: float, late: bool = False) -> None:
        if self.fails is not None:
            raise self.fails
        self.received.append((packet.sequence_number, keyframe_start))
        self.forwarded.append(Forwarded(packet.sequence_number, packet.payload_type, packet.ssrc, packet.timestamp,
                                        packet.marker, packet.payload, codec, keyframe_start, late))

    def carries(self, codec: RTCRtpCodecParameters) -> bool:
        return self.red or codec.mimeType.lower() != "audio/red"

    def skip_source(self, after_seq: int, upto_seq: int) -> None:
        self.skipped.append((after_seq, upto_seq))

    def source_restarted(self) -> None:
        self.restarts += 1

    def switch_feed(self, feed: DownTrackSource) -> None:
        self.feed = feed

    def bind(self, source: DownTrackSource) -> None:
        self.source = self.feed = source

    def unbind(self) -> None:
        self.source = self.feed = None
