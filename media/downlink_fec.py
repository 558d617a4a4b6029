"""One down-track's video FEC on the wire: which packets it protects and where the FEC goes.

media/video_fec.py decides how much FEC the downlink's loss calls for and builds the
payloads; this stage feeds it each media packet as the browser will check it (unwrapped,
abs-send-time zeroed), numbers the FEC packets in the media stream right after the
frame's last one, and sends them as recovery traffic within the subscriber's send budget.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .packet_cache import SentPacket
from .receiver_reports import RTP_HEADER_BYTES
from .rtp_writer import MAX_PACKET_BYTES, RtpWriter
from .send_budget import SendBudget
from .seqnum import seq_add
from .video_fec import VideoFecSender


class DownlinkFec:
    def __init__(self, sender: VideoFecSender, *, writer: RtpWriter, ssrc: int, budget: SendBudget,
                 reserve: Callable[[int], int], send: Callable[[bytes], Awaitable[None]]) -> None:
        """`reserve(n)`: the first of n sequence numbers taken in the media stream;
        `send`: puts one recovery packet on the wire (through the pacer)."""
        self.sender = sender
        self.payload_types = sender.payload_types
        self._writer = writer
        self._ssrc = ssrc
        self._budget = budget
        self._reserve = reserve
        self._send = send
        self.packets_sent = 0
        self.oversize = 0  # FEC packets too long to protect, not sent

    @property
    def active(self) -> bool:
        return self.sender.active

    @property
    def group(self) -> int | None:
        return self.sender.group

    def update_loss(self, loss: float) -> None:
        self.sender.update_loss(loss)

    def reset(self) -> None:
        self.sender.reset()

    async def protect(self, sent: SentPacket, media_pt: int, media_payload: bytes, abs_send_time: int
                      ) -> tuple[int, int]:
        """Protect one in-order media packet; after a frame's last one, send the frame's FEC.
        Returns the FEC packets and payload bytes sent (the stream's sender report counts them)."""
        writer = self._writer
        protected = writer.write(
            payload_type=media_pt, marker=sent.marker, sequence_number=sent.sequence_number,
            timestamp=sent.timestamp, ssrc=self._ssrc, payload=media_payload, abs_send_time=0)
        payloads = self.sender.protect(protected)
        if not payloads or not self._budget.allow_recovery(sum(len(p) + RTP_HEADER_BYTES for p in payloads),
                                                           sent.sent_at):
            return 0, 0
        first = self._reserve(len(payloads))
        packets = octets = 0
        for i, payload in enumerate(payloads):
            data = writer.write(
                payload_type=self.payload_types.red, marker=0, sequence_number=seq_add(first, i),
                timestamp=sent.timestamp, ssrc=self._ssrc, payload=payload, abs_send_time=abs_send_time)
            if len(data) > MAX_PACKET_BYTES:  # FEC over full-size packets: its number is a harmless hole
                self.oversize += 1
                continue
            await self._send(data)
            packets += 1
            octets += len(payload)
        self.packets_sent += packets
        return packets, octets
