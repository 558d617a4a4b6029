"""Sending RTCP on an aiortc DTLS transport, tolerating a transport that closed.

A peer that vanished must never break forwarding to everybody else, so every
send swallows ConnectionError (the transport reports closure elsewhere).
"""

from __future__ import annotations

import logging

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import AnyRtcpPacket

logger = logging.getLogger(__name__)


async def send_rtcp(transport: RTCDtlsTransport, packets: list[AnyRtcpPacket]) -> bool:
    try:
        await transport._send_rtp(b"".join(bytes(p) for p in packets))
        return True
    except ConnectionError:
        return False
