"""Per-packet cost of the forwarding path: PublishedTrack -> DownTracks -> SRTP.

Feeds real VP8 RTP packets (encoded once with aiortc's encoder, 720p) through a
PublishedTrack with N subscribers' DownTracks whose transport does real SRTP
protection but no socket I/O, so the figure is the server's own per-packet work
(parse excluded: aiortc's router parses once before us). Used for before/after
comparisons of media-path changes:

    python -m loadtest.bench_packet_path --subscribers 2 --packets 20000

`--uplink-fec-loss L` makes the publisher's uplink Chrome's RED (every VP8 packet
wrapped, ULPFEC after frames at the rate our FEC sender uses for loss L; 0: RED
without FEC), arriving as the transport hands it over (media.aiortc_bridge.WirePacket).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import time
from typing import Optional, cast

import numpy as np
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport
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
from media.sdp_video_fec import VideoFecPayloadTypes
from media.video_fec import VideoFecSender, red_wrap

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=98, parameters={"apt": 97})
EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
    RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
]


class SrtpOnlyTransport:
    """Stands in for RTCDtlsTransport: real SRTP protection, no network. media/ types its
    transports as RTCDtlsTransport, hence the casts where one is handed over."""

    def __init__(self) -> None:
        key = os.urandom(30)
        self._srtp = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        self._rtp_header_extensions_map = HeaderExtensionsMap()
        self._rtp_header_extensions_map.configure(RTCRtpSendParameters(codecs=[VP8], headerExtensions=EXTENSIONS))
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
                          timestamp=timestamp, ssrc=1234, payload=payload)
            p.extensions.abs_send_time = 0
            packets.append(p)
            seq = (seq + 1) % 65536
    return packets


FEC_PTS = VideoFecPayloadTypes(red=116, ulpfec=118, rtx=117)
RED = RTCRtpCodecParameters(mimeType="video/red", clockRate=90000, payloadType=FEC_PTS.red)
ULPFEC = RTCRtpCodecParameters(mimeType="video/ulpfec", clockRate=90000, payloadType=FEC_PTS.ulpfec)
RTX_RED = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=FEC_PTS.rtx,
                                parameters={"apt": FEC_PTS.red})


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
                           ssrc=1234, payload=payload)
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


async def run(subscribers: int, packet_count: int, fec_loss: Optional[float] = None,
              uplink_fec_loss: Optional[float] = None) -> dict:
    """`fec_loss`: subscribers negotiated video RED/ULPFEC and report this loss (None: plain VP8).
    `uplink_fec_loss`: the publisher sends RED, with ULPFEC as for this loss (None: plain VP8)."""
    template = vp8_packets()
    uplink_codecs = [VP8, RTX] + ([RED, ULPFEC, RTX_RED] if uplink_fec_loss is not None else [])
    track = PublishedTrack(
        participant_id="publisher", kind="video", transport=cast(RTCDtlsTransport, SrtpOnlyTransport()),
        parameters=RTCRtpReceiveParameters(codecs=uplink_codecs, headerExtensions=EXTENSIONS,
                                           encodings=[RTCRtpDecodingParameters(ssrc=1234, payloadType=97)],
                                           rtcp=RTCRtcpParameters()),
        rtcp_ssrc=1,
    )
    downtracks = []
    for i in range(subscribers):
        dt = DownTrack(subscriber_id=f"s{i}", kind="video", ssrc=1000 + i, rtx_ssrc=2000 + i)
        codecs = [VP8, RTX] + ([RED, ULPFEC, RTX_RED] if fec_loss is not None else [])
        await dt.start(cast(RTCDtlsTransport, SrtpOnlyTransport()),
                       RTCRtpSendParameters(codecs=codecs, headerExtensions=EXTENSIONS, muxId="3",
                                            rtcp=RTCRtcpParameters(cname="x")))
        if fec_loss is not None:
            dt.note_reported_loss(fec_loss)
            dt.note_reported_loss(fec_loss)  # smoothed: two reports bring it close
        dt.attach(track)
        downtracks.append(dt)

    # pre-build the input stream so the timed loop measures only forwarding
    stream = plain_stream(template, packet_count)
    if uplink_fec_loss is not None:
        stream = red_uplink_stream(stream, uplink_fec_loss)

    started = time.process_time()
    for packet in stream:
        await track._handle_rtp_packet(packet, arrival_time_ms=0)
    elapsed = time.process_time() - started
    for dt in downtracks:
        await dt.stop()
    await track.stop()
    fec_sent = sum(dt.summary()["fec_packets"] for dt in downtracks)
    forwarded = sum(dt.packets_sent for dt in downtracks) - fec_sent
    uplink_fec = track.summary()["uplink_fec"]
    return {
        "subscribers": subscribers,
        "packets_in": len(stream),
        "packets_forwarded": forwarded,
        "cpu_s": round(elapsed, 4),
        "us_per_packet_in": round(elapsed / len(stream) * 1e6, 2),
        "us_per_packet_forwarded": round(elapsed / max(1, forwarded) * 1e6, 2),
        "fec_loss": fec_loss,
        "fec_packets_sent": fec_sent,
        "uplink_fec_loss": uplink_fec_loss,
        "uplink_fec_packets": 0 if uplink_fec is None else uplink_fec["fec_received"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per setting")
    parser.add_argument("--fec-loss", type=float, default=None,
                        help="subscribers negotiated video RED/ULPFEC and report this loss fraction (e.g. 0.3)")
    parser.add_argument("--uplink-fec-loss", type=float, default=None,
                        help="the publisher sends RED with ULPFEC as for this loss fraction (0: RED, no FEC)")
    args = parser.parse_args()
    results = []
    for n in args.subscribers:
        best = min((asyncio.run(run(n, args.packets, args.fec_loss, args.uplink_fec_loss))
                    for _ in range(args.repeat)),
                   key=lambda r: r["cpu_s"])
        results.append(best)
        print(json.dumps(best), flush=True)


if __name__ == "__main__":
    main()
