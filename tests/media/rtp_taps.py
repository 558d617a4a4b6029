"""Taps on an aiortc DTLS transport, for tests that watch or drop RTP packets."""

from __future__ import annotations

from collections.abc import Callable

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RtpPacket, is_rtcp


def tap_outgoing_rtp(transport: RTCDtlsTransport, keep: Callable[[RtpPacket], bool]) -> None:
    """Call `keep` on every RTP packet the transport is about to send; False drops it."""
    original = transport._send_rtp

    async def tapped(data: bytes) -> None:
        if is_rtcp(data) or keep(RtpPacket.parse(data)):
            await original(data)

    transport._send_rtp = tapped


def tap_incoming_rtp(transport: RTCDtlsTransport, see: Callable[[RtpPacket], None]) -> None:
    """Call `see` on every decrypted RTP packet the transport receives."""
    original = transport._handle_rtp_data

    async def tapped(data: bytes, arrival_time_ms: int) -> None:
        see(RtpPacket.parse(data))
        await original(data, arrival_time_ms)

    transport._handle_rtp_data = tapped


def drop_incoming_rtp(transport: RTCDtlsTransport, keep: Callable[[RtpPacket], bool]) -> None:
    """Call `keep` on every decrypted RTP packet the transport receives; False drops it (a lossy downlink)."""
    original = transport._handle_rtp_data

    async def tapped(data: bytes, arrival_time_ms: int) -> None:
        if keep(RtpPacket.parse(data)):
            await original(data, arrival_time_ms)

    transport._handle_rtp_data = tapped
