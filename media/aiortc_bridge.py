"""The one place that reaches into aiortc: swaps its RTP path for ours.

aiortc's RTCPeerConnection gives us SDP, ICE, DTLS and SRTP. Its RTCRtpReceiver
would push packets through jitter buffers into a decoder thread and its
RTCRtpSender would encode (or pack whole frames and ignore PLI). For an SFU we
want neither, so when aiortc starts a transceiver's receiver or sender we
register our own object with the DTLS transport's RTP router instead. aiortc's
router is duck-typed: it calls `_handle_rtp_packet` / `_handle_rtcp_packet` on
whatever is registered, and files senders under their `_ssrc`.

This relies on aiortc internals of the pinned version (1.16.0):
RTCRtpReceiver.receive/stop, RTCRtpSender.send/stop being looked up on the
instance by RTCPeerConnection, RTCDtlsTransport._register_rtp_receiver /
_register_rtp_sender / _send_rtp / _rtp_router.register_sender and
RTCRtpReceiver._rtcp_ssrc, aioice's Connection._queue, and aiortc.rtcdtlstransport
parsing received RTP and RTCP with its module-level `RtpPacket.parse` (WirePacket) and
`RtcpPacket.parse` (transport-cc feedback, media/rtcp_feedback.py). The forwarding and loss-recovery tests,
which run real aiortc peers through these paths, pin these assumptions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Optional, cast

import aiortc.rtcdtlstransport as dtls_transport_module
from aiortc import RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from .bounded_queue import DropOldestQueue
from .downtrack import DownTrack
from .rtcp_feedback import RtcpWithTransportFeedback
from .simulcast import Publication

# ~0.5 s of a three-party room's incoming packets; beyond that, old packets are worth less than new ones.
ICE_RECEIVE_QUEUE_PACKETS = 512


class WirePacket(RtpPacket):
    """An RtpPacket that keeps the bytes it was parsed from (`raw`).

    ULPFEC protects packets as sent, and aiortc's parse keeps only the header
    extensions it knows. Packets aiortc builds itself (RTX unwrapped) are plain
    RtpPackets without `raw`, which keeps them out of FEC, as libwebrtc does.
    """

    raw: bytes = b""

    @classmethod
    def parse(cls, data: bytes, extensions_map: Optional[HeaderExtensionsMap] = None) -> "WirePacket":
        extensions_map = extensions_map if extensions_map is not None else HeaderExtensionsMap()
        try:
            # aiortc's parse builds `cls(...)`, a WirePacket here, but is annotated to return RtpPacket
            packet = cast(WirePacket, super().parse(data, extensions_map))
        except struct.error as exc:
            # a known header extension of the wrong length: aiortc's transport drops a packet that
            # raises ValueError, and anything else would end the participant's connection
            raise ValueError(f"RTP header extension malformed: {exc}") from None
        packet.raw = data
        return packet


def keep_wire_bytes() -> None:
    """In this process, DTLS transports parse what they receive as WirePackets (the only RTP they parse)."""
    # replaces the class aiortc's DTLS transport parses RTP with, on purpose
    dtls_transport_module.RtpPacket = WirePacket  # type: ignore[misc]


def keep_transport_feedback() -> None:
    """In this process, DTLS transports parse RTCP with transport-cc feedback kept whole."""
    dtls_transport_module.RtcpPacket = RtcpWithTransportFeedback  # type: ignore[misc]


def bound_ice_receive_queue(transceiver: RTCRtpTransceiver,
                            capacity: int = ICE_RECEIVE_QUEUE_PACKETS) -> DropOldestQueue:
    """Replace aioice's unbounded receive queue of this transceiver's ICE connection."""
    connection = transceiver.receiver.transport.transport._connection
    if not isinstance(connection._queue, DropOldestQueue):
        bounded = DropOldestQueue(capacity)
        while not connection._queue.empty():
            bounded.put_nowait(connection._queue.get_nowait())
        connection._queue = bounded
    return connection._queue


def receiver_rtcp_ssrc(transceiver: RTCRtpTransceiver) -> int:
    """The SSRC aiortc signalled for RTCP feedback we send from this transceiver."""
    return transceiver.sender._ssrc


def take_over_receiver(
    transceiver: RTCRtpTransceiver,
    make_track: Callable[[RTCRtpReceiveParameters], Publication],
    on_started: Callable[[Publication], None],
) -> None:
    """When aiortc starts receiving on this transceiver, a PublishedTrack (or a SimulcastTrack,
    media/simulcast.py) takes the packets."""
    receiver = transceiver.receiver
    state: dict[str, Publication] = {}

    async def receive(parameters: RTCRtpReceiveParameters) -> None:
        if "track" in state:
            return
        keep_wire_bytes()  # before any packet reaches the track: uplink ULPFEC needs them
        track = make_track(parameters)
        state["track"] = track
        track.start()
        on_started(track)

    async def stop() -> None:
        track = state.get("track")
        if track is not None:
            await track.stop()

    receiver.receive = receive  # type: ignore[method-assign]
    receiver.stop = stop  # type: ignore[method-assign]


def take_over_sender(
    transceiver: RTCRtpTransceiver,
    downtrack: DownTrack,
    prepare: Callable[[RTCRtpSendParameters], RTCRtpSendParameters] = lambda p: p,
) -> None:
    """When aiortc starts sending on this transceiver, the DownTrack sends instead.

    `prepare` may add what aiortc does not negotiate itself (RED) to the parameters."""
    sender = transceiver.sender

    async def send(parameters: RTCRtpSendParameters) -> None:
        keep_transport_feedback()  # before the subscriber's first feedback arrives
        await downtrack.start(sender.transport, prepare(parameters))

    async def stop() -> None:
        await downtrack.stop()

    sender.send = send  # type: ignore[method-assign]
    sender.stop = stop  # type: ignore[method-assign]
