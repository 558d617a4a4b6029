"""What a media stage puts on the wire, captured before SRTP."""

from __future__ import annotations

import time


class CapturingTransport:
    """Stands in for RTCDtlsTransport on either side of a track: keeps every datagram sent (RTP and
    RTCP), before SRTP, with the monotonic time it was sent at."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.times: list[float] = []

    def _register_rtp_sender(self, sender, parameters) -> None: ...
    def _unregister_rtp_sender(self, sender) -> None: ...
    def _register_rtp_receiver(self, receiver, parameters) -> None: ...
    def _unregister_rtp_receiver(self, receiver) -> None: ...

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append(data)
        self.times.append(time.monotonic())
