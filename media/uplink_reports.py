"""Receiver reports and REMB toward a publisher: what its congestion control reads of its uplink.

One published track's stage. It counts first transmissions only, as libwebrtc's reports
do (a packet recovered over RTX was not "received" on the media SSRC), so the publisher
sees the link's real loss and backs off from it; each report answers the publisher's
latest sender report (LSR/DLSR), which is how the publisher measures its RTT.
"""

from __future__ import annotations

import time
from typing import Optional

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpReceiverInfo, RtcpRrPacket, RtpPacket, pack_remb_fci

from .rtcp_io import send_rtcp
from .rtp_clock import SenderReport


class UplinkReports:
    def __init__(self, transport: RTCDtlsTransport, rtcp_ssrc: int) -> None:
        self._transport = transport
        self._rtcp_ssrc = rtcp_ssrc
        self.stats: Optional[StreamStatistics] = None  # from the first first transmission on

    def count(self, packet: RtpPacket, clock_rate: int) -> None:
        """A first transmission arrived (not a retransmission)."""
        stats = self.stats
        if stats is None:
            stats = self.stats = StreamStatistics(clock_rate)
        stats.add(packet)

    def restart(self) -> None:
        """A new stream (SSRC): its numbers have nothing to do with the old ones."""
        self.stats = None

    @property
    def lost(self) -> int:
        """First transmissions the uplink lost, as the reports tell the publisher."""
        return 0 if self.stats is None or self.stats.max_seq is None else self.stats.packets_lost

    def report(self, media_ssrc: Optional[int], sender_report: Optional[SenderReport],
               now_wall: Optional[float] = None) -> Optional[RtcpRrPacket]:
        """The receiver report due now, None before anything was counted."""
        stats = self.stats
        if stats is None or media_ssrc is None or stats.max_seq is None:
            return None
        lsr = dlsr = 0
        if sender_report is not None:
            lsr = (sender_report.ntp_timestamp >> 16) & 0xFFFFFFFF
            delay = (time.time() if now_wall is None else now_wall) - sender_report.received_at
            if 0 < delay < 65536:
                dlsr = int(delay * 65536)
        return RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=[RtcpReceiverInfo(
            ssrc=media_ssrc, fraction_lost=stats.fraction_lost, packets_lost=stats.packets_lost,
            highest_sequence=stats.max_seq, jitter=stats.jitter, lsr=lsr, dlsr=dlsr)])

    async def send_report(self, media_ssrc: Optional[int], sender_report: Optional[SenderReport]) -> bool:
        report = self.report(media_ssrc, sender_report)
        return report is not None and await send_rtcp(self._transport, [report])

    async def send_remb(self, bitrate: Optional[int], media_ssrc: Optional[int]) -> bool:
        """The bitrate asked of the publisher (media/bitrate_policy.py decides it)."""
        if bitrate is None or media_ssrc is None:
            return False
        fci = pack_remb_fci(bitrate, [media_ssrc])
        return await send_rtcp(self._transport, [RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=self._rtcp_ssrc,
                                                                 media_ssrc=0, fci=fci)])
