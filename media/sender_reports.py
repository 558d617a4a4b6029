"""The RTCP sender reports a down-track sends its subscriber.

Each report carries the publisher's own NTP <-> RTP mapping (its latest sender report,
media/rtp_clock.py) carried forward along the same line to the moment of sending, with
the RTP timestamp shifted into the down-track's numbering (the stream rewriter's
offset): the subscriber lip-syncs the forwarded audio and video as the publisher's
clocks say, and the report has an NTP time of its own, so the receiver's answer (LSR)
names which report it answers and gives one RTT. While a paused video's probe pads its
RTX stream, that stream is reported on too (a browser reports only on streams it still
receives).

Composition only: the down-track decides when a report goes out and sends it
(media/downtrack.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

from aiortc.rtp import AnyRtcpPacket, RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from .rtp_clock import SenderReport
from .seqnum import TS_MOD

NTP_MOD = 1 << 64
COUNT_MASK = 0xFFFFFFFF  # packet and octet counts are 32 bits and wrap
SDES_CNAME = 1


class TimestampMap(Protocol):
    """The down-track's timestamp numbering (media/rewriter.py's StreamRewriter)."""

    clock_rate: int

    def map_timestamp(self, ts: int) -> int:
        """A source RTP timestamp in the down-track's numbering."""
        ...


def carried_forward(report: SenderReport, wall_now: float, clock_rate: int) -> tuple[int, int]:
    """The publisher's (NTP, RTP) pair moved along its own line to `wall_now` (time.time()).

    Repeating the publisher's pair instead made several reports share an LSR, and RTTs from
    their answers came out wrong, down to zero."""
    elapsed = max(0.0, wall_now - report.received_at)
    ntp = (report.ntp_timestamp + int(elapsed * (1 << 32))) % NTP_MOD
    rtp = (report.rtp_timestamp + int(elapsed * clock_rate)) % TS_MOD
    return ntp, rtp


@dataclass(frozen=True, slots=True)
class ComposedReport:
    ntp_timestamp: int  # this report's own NTP time (what the subscriber's LSR will name)
    packets: list[AnyRtcpPacket]  # one compound RTCP packet's parts, in order


class SenderReports:
    """Composes one down-track's reports: its media SSRC, its RTX SSRC while a probe pads it,
    and the CNAME (SDES) once the negotiation named one."""

    __slots__ = ("ssrc", "rtx_ssrc", "cname")

    def __init__(self, *, ssrc: int, rtx_ssrc: int, cname: Optional[str] = None) -> None:
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.cname = cname

    def compose(self, report: Optional[SenderReport], wall_now: float, timestamps: TimestampMap, *,
                packets: int, octets: int, probe: Optional[tuple[int, int]] = None) -> Optional[ComposedReport]:
        """The report for `wall_now` (time.time()); None while the publisher has sent no report
        (there is no mapping to pass on). `packets`, `octets`: what the media stream sent;
        `probe`: (packets, octets) of padding on the RTX stream when it is reported on too."""
        if report is None:
            return None
        ntp, rtp = carried_forward(report, wall_now, timestamps.clock_rate)
        rtp = timestamps.map_timestamp(rtp)
        parts: list[AnyRtcpPacket] = [RtcpSrPacket(ssrc=self.ssrc, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp, packet_count=packets & COUNT_MASK,
            octet_count=octets & COUNT_MASK))]
        if probe is not None:
            parts.append(RtcpSrPacket(ssrc=self.rtx_ssrc, sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp, rtp_timestamp=rtp, packet_count=probe[0] & COUNT_MASK,
                octet_count=probe[1] & COUNT_MASK)))
        if self.cname:
            parts.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self.ssrc, items=[(SDES_CNAME,
                                                                                       self.cname.encode())])]))
        return ComposedReport(ntp, parts)
