"""The server's video forwarding path in one process, without a network: PublishedTrack -> DownTracks -> SRTP.

A `ForwardingRig` is one published track feeding N subscribers' down-tracks, each on a
transport that really SRTP-protects what it is handed and sends nothing
(`SrtpOnlyTransport`), so all the work done is the server's own. Its input is real VP8
RTP (aiortc's encoder, 720p), looped to any length (`plain_stream`), or the same media
as Chrome sends it with red/ulpfec negotiated (`red_uplink_stream`). Used by the
packet-path benchmark (loadtest.bench_packet_path) and by tests of the forwarding path.

The codec parameters are those an aiortc peer negotiates for video by default (VP8 on
97, its RTX on 98; the mid and abs-send-time header extensions), plus the RED/ULPFEC
payload types of the server's video FEC offer.
"""

from __future__ import annotations

import fractions
import os
from dataclasses import dataclass
from typing import Optional, cast

import numpy as np
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from av import VideoFrame
from pylibsrtp import Policy, Session

from media.aiortc_bridge import WirePacket
from media.downtrack import DownTrack
from media.published_track import PublishedTrack
from media.sdp_transport_cc import transport_cc_extension
from media.sdp_video_fec import VideoFecPayloadTypes
from media.video_fec import VideoFecSender, red_wrap

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=98, parameters={"apt": 97})
EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
    RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
]

FEC_PTS = VideoFecPayloadTypes(red=116, ulpfec=118, rtx=117)
RED = RTCRtpCodecParameters(mimeType="video/red", clockRate=90000, payloadType=FEC_PTS.red)
ULPFEC = RTCRtpCodecParameters(mimeType="video/ulpfec", clockRate=90000, payloadType=FEC_PTS.ulpfec)
RTX_RED = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=FEC_PTS.rtx,
                                parameters={"apt": FEC_PTS.red})

PUBLISHER_SSRC = 1234


class SrtpOnlyTransport:
    """Stands in for RTCDtlsTransport: real SRTP protection, no network. media/ types its
    transports as RTCDtlsTransport, hence the casts where one is handed over."""

    def __init__(self) -> None:
        key = os.urandom(30)
        self._srtp = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self._rtp_header_extensions_map = HeaderExtensionsMap()
        self._rtp_header_extensions_map.configure(RTCRtpSendParameters(codecs=[VP8], headerExtensions=EXTENSIONS))
        self._rtp_router = RtpRouter()  # a down-track with transport-cc files itself under its RTX SSRC too
        self.bytes_sent = 0

    def _register_rtp_sender(self, sender, parameters) -> None: ...
    def _unregister_rtp_sender(self, sender) -> None: ...
    def _register_rtp_receiver(self, receiver, parameters) -> None: ...
    def _unregister_rtp_receiver(self, receiver) -> None: ...

    async def _send_rtp(self, data: bytes) -> None:
        self.bytes_sent += len(self._srtp.protect(data))


def vp8_packets(frames: int = 120, width: int = 1280, height: int = 720) -> list[RtpPacket]:
    encoder = get_encoder(VP8)
    assert isinstance(encoder, Vp8Encoder)  # what VP8 gives; typed as the base Encoder
    encoder.target_bitrate = 1_500_000
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    packets: list[RtpPacket] = []
    seq = 0
    for i in range(frames):
        frame = VideoFrame.from_ndarray(np.roll(base, i * 8, axis=1), format="bgr24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, timestamp = encoder.encode(frame, force_keyframe=(i == 0))
        for j, payload in enumerate(payloads):
            p = RtpPacket(payload_type=97, marker=int(j == len(payloads) - 1), sequence_number=seq,
                          timestamp=timestamp, ssrc=PUBLISHER_SSRC, payload=payload)
            p.extensions.abs_send_time = 0
            packets.append(p)
            seq = (seq + 1) % 65536
    return packets


def plain_stream(template: list[RtpPacket], packet_count: int) -> list[RtpPacket]:
    """The template looped to `packet_count` packets, numbered on."""
    stream = []
    loops = packet_count // len(template) + 1
    for loop in range(loops):
        for p in template:
            q = RtpPacket(payload_type=p.payload_type, marker=p.marker,
                          sequence_number=(p.sequence_number + loop * len(template)) % 65536,
                          timestamp=(p.timestamp + loop * 360000) % 2**32, ssrc=p.ssrc, payload=p.payload)
            q.extensions.abs_send_time = 0
            stream.append(q)
    return stream[:packet_count]


def red_uplink_stream(plain: list[RtpPacket], fec_loss: float) -> list[RtpPacket]:
    """The same media as Chrome sends it with red/ulpfec negotiated, parsed as the transport parses it."""
    extensions = HeaderExtensionsMap()
    extensions.configure(RTCRtpReceiveParameters(codecs=[VP8], headerExtensions=EXTENSIONS))
    fec = VideoFecSender(FEC_PTS)
    fec.update_loss(fec_loss)
    stream: list[RtpPacket] = []
    seq = 0

    def wire(payload_type: int, marker: int, timestamp: int, payload: bytes, send_time: int) -> bytes:
        packet = RtpPacket(payload_type=payload_type, marker=marker, sequence_number=seq, timestamp=timestamp,
                           ssrc=PUBLISHER_SSRC, payload=payload)
        packet.extensions.abs_send_time = send_time
        return packet.serialize(extensions)

    for p in plain:
        protected = wire(p.payload_type, p.marker, p.timestamp, p.payload, 0)
        stream.append(WirePacket.parse(wire(FEC_PTS.red, p.marker, p.timestamp,
                                            red_wrap(p.payload_type, p.payload), seq & 0xFFFFFF), extensions))
        seq = (seq + 1) % 65536
        for payload in fec.protect(protected):
            stream.append(WirePacket.parse(wire(FEC_PTS.red, 0, p.timestamp, payload, seq), extensions))
            seq = (seq + 1) % 65536
    return stream


@dataclass
class ForwardingRig:
    """One published video track, started, forwarding to its subscribers' started down-tracks."""

    track: PublishedTrack
    downtracks: list[DownTrack]
    packets_in: int = 0

    @classmethod
    async def start(cls, subscribers: int, *, fec_loss: Optional[float] = None,
                    uplink_red: bool = False, transport_cc: bool = False) -> ForwardingRig:
        """`fec_loss`: subscribers negotiated video RED/ULPFEC and report this loss (None: plain VP8).
        `uplink_red`: the publisher negotiated RED/ULPFEC too (feed it red_uplink_stream).
        `transport_cc`: subscribers negotiated transport-cc (every packet numbered as it leaves)."""
        downlink_extensions = EXTENSIONS + ([transport_cc_extension(5)] if transport_cc else [])
        uplink_codecs = [VP8, RTX] + ([RED, ULPFEC, RTX_RED] if uplink_red else [])
        track = PublishedTrack(
            participant_id="publisher", kind="video", transport=cast(RTCDtlsTransport, SrtpOnlyTransport()),
            parameters=RTCRtpReceiveParameters(codecs=uplink_codecs, headerExtensions=EXTENSIONS,
                                               encodings=[RTCRtpDecodingParameters(ssrc=PUBLISHER_SSRC,
                                                                                   payloadType=97)],
                                               rtcp=RTCRtcpParameters()),
            rtcp_ssrc=1,
        )
        downtracks = []
        for i in range(subscribers):
            dt = DownTrack(subscriber_id=f"s{i}", kind="video", ssrc=1000 + i, rtx_ssrc=2000 + i)
            codecs = [VP8, RTX] + ([RED, ULPFEC, RTX_RED] if fec_loss is not None else [])
            await dt.start(cast(RTCDtlsTransport, SrtpOnlyTransport()),
                           RTCRtpSendParameters(codecs=codecs, headerExtensions=downlink_extensions, muxId="3",
                                                rtcp=RTCRtcpParameters(cname="x")))
            if fec_loss is not None:
                dt.note_reported_loss(fec_loss)
                dt.note_reported_loss(fec_loss)  # smoothed: two reports bring it close
            dt.attach(track)
            downtracks.append(dt)
        return cls(track, downtracks)

    async def feed(self, stream: list[RtpPacket]) -> None:
        """Hands each packet to the published track as the DTLS transport's router would."""
        for packet in stream:
            await self.track._handle_rtp_packet(packet, arrival_time_ms=0)
        self.packets_in += len(stream)

    async def stop(self) -> dict[str, int]:
        """Stops the down-tracks and the track; counts of what went through, over all subscribers."""
        for dt in self.downtracks:
            await dt.stop()
        await self.track.stop()
        fec_sent = sum(dt.summary()["fec_packets"] for dt in self.downtracks)
        uplink_fec = self.track.summary()["uplink_fec"]
        return {
            "packets_in": self.packets_in,
            "packets_forwarded": sum(dt.packets_sent for dt in self.downtracks) - fec_sent,  # media, not FEC
            "fec_packets_sent": fec_sent,
            "uplink_fec_packets": 0 if uplink_fec is None else uplink_fec["fec_received"],
        }
