"""RTCP as aiortc parses it, plus the transport-wide feedback it does not know.

aiortc reads every RTP feedback message (PT 205) as a NACK, so transport-cc
feedback (FMT 15) would reach us as a list of made-up lost packets. This parser
keeps that message's bytes in a `TransportFeedbackPacket` (decoded by
media/twcc_feedback.py where it is used) and hands every other message of the
compound packet to aiortc, with aiortc's rules: anything malformed drops the
whole compound packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from aiortc.rtp import AnyRtcpPacket, RtcpPacket, RtcpRtpfbPacket

RTCP_RTPFB = 205
RTCP_RTPFB_TRANSPORT_CC = 15
_header = struct.Struct("!BBH")
_ssrcs = struct.Struct("!LL")


@dataclass
class TransportFeedbackPacket(RtcpRtpfbPacket):
    """Transport-wide congestion control feedback: its FCI undecoded."""

    fci: bytes = b""

    def __bytes__(self) -> bytes:
        body = _ssrcs.pack(self.ssrc, self.media_ssrc) + self.fci
        return _header.pack(0x80 | self.fmt, RTCP_RTPFB, len(body) // 4) + body


def _is_transport_feedback(first: int, packet_type: int) -> bool:
    return packet_type == RTCP_RTPFB and first & 0x1F == RTCP_RTPFB_TRANSPORT_CC


class RtcpWithTransportFeedback(RtcpPacket):
    @classmethod
    def parse(cls, data: bytes) -> list[AnyRtcpPacket]:
        packets: list[AnyRtcpPacket] = []
        pos = 0
        while pos < len(data):
            if len(data) < pos + 4:
                raise ValueError("RTCP packet length is less than 4 bytes")
            first, packet_type, length = _header.unpack_from(data, pos)
            end = pos + 4 + length * 4
            if end > len(data):
                raise ValueError("RTCP packet is truncated")
            if not _is_transport_feedback(first, packet_type):
                packets.extend(RtcpPacket.parse(data[pos:end]))  # aiortc's rules, its version check among them
                pos = end
                continue
            if first >> 6 != 2:
                raise ValueError("RTCP packet has invalid version")
            payload = data[pos + 4:end]
            if first & 0x20:  # padding: its last byte counts it
                if not payload or not 0 < payload[-1] <= len(payload):
                    raise ValueError("RTCP packet padding length is invalid")
                payload = payload[:-payload[-1]]
            if len(payload) < _ssrcs.size:
                raise ValueError("RTCP transport feedback is too short")
            ssrc, media_ssrc = _ssrcs.unpack_from(payload)
            packets.append(TransportFeedbackPacket(fmt=RTCP_RTPFB_TRANSPORT_CC, ssrc=ssrc,
                                                   media_ssrc=media_ssrc, fci=bytes(payload[_ssrcs.size:])))
            pos = end
        return packets
