"""A down-track's reading of the subscriber's receiver reports (RTCP RR, and the report
blocks in its SRs): the round-trip time, the downlink's own loss, the bytes it delivered.

- RTT: each report block answers one of our sender reports (LSR, DLSR, RFC 3550 6.4.1);
  only once per sender report, as a receiver repeats the last one's figures until the next.
  The RTX stream's block counts too: while video is paused, a probe's padding is what the
  subscriber still receives and reports on.
- Loss: the numbers the subscriber counts lost between two reports, less those this
  down-track skipped because the publisher's uplink had lost them. Without that a lossy
  uplink would read as a lossy downlink to every subscriber and turn their FEC on for
  nothing. Smoothed; video only (audio's protection is copies sized by NACKs).
- Delivered bytes: what the downlink carried between two reports, which under a full queue
  is what it can carry (media/downlink_estimate.py).
"""

from __future__ import annotations

import time
from typing import Optional

from aiortc.rtp import RtcpReceiverInfo

from .downlink_estimate import DownlinkEstimate
from .packet_cache import PacketCache
from .send_budget import PACKET_OVERHEAD_BYTES
from .seqnum import seq_add, seq_diff

# Until the subscriber's RTT is measured.
DEFAULT_RTT_S = 0.1
# Weight of each receiver report's fraction lost (one report covers about a second).
REPORTED_LOSS_WEIGHT = 0.5
# Numbers skipped over (the source had not delivered them) remembered for the receiver
# reports: a few seconds of 720p video.
UNSENT_TRACKED = 1024
# Sender reports remembered for matching the receiver reports that answer them (RTT).
RECENT_SENDER_REPORTS = 4
# An RTP header with a down-track's extensions, about.
RTP_HEADER_BYTES = 24


class ReceiverReports:
    def __init__(self, *, ssrc: int, rtx_ssrc: int, video: bool, cache: PacketCache,
                 estimate: DownlinkEstimate) -> None:
        self._ssrc = ssrc
        self._rtx_ssrc = rtx_ssrc
        self._video = video
        self._cache = cache  # what was sent under each number: the bytes a report says arrived
        self._estimate = estimate
        self.rtt: Optional[float] = None
        # Loss the subscriber reports (fraction lost, smoothed): a browser counts packets it
        # recovered (RTX, FEC) as lost there, so this sees through FEC where the NACK count
        # may not (a receiver that does not NACK, or one whose FEC repaired the gap first).
        self.reported_loss = 0.0
        self._recent_srs: dict[int, float] = {}  # LSR -> wall time our sender report left
        self._last: Optional[tuple[int, int]] = None  # (extended highest number, cumulative lost)
        self._unsent: set[int] = set()  # numbers skipped over, the source not having them

    def sender_report_sent(self, ntp_timestamp: int) -> None:
        self._recent_srs[(ntp_timestamp >> 16) & 0xFFFFFFFF] = time.time()
        if len(self._recent_srs) > RECENT_SENDER_REPORTS:
            del self._recent_srs[next(iter(self._recent_srs))]

    def track_unsent(self, newest_sent: int, seq: int) -> None:
        """Per video packet sent as `seq`: numbers skipped over because the source had not
        delivered them (yet), and late packets filling their place."""
        ahead = seq_diff(seq, newest_sent)
        if ahead > 1:
            self._unsent.update(seq_add(newest_sent, k) for k in range(1, min(ahead, UNSENT_TRACKED)))
            if len(self._unsent) > UNSENT_TRACKED:  # long gone: the reports are past them
                self._unsent = {s for s in self._unsent if seq_diff(seq, s) < UNSENT_TRACKED}
        elif ahead <= 0:
            self._unsent.discard(seq)

    def note_reported_loss(self, fraction: float) -> None:
        """One report's fraction lost for this stream (0..1)."""
        self.reported_loss += REPORTED_LOSS_WEIGHT * (fraction - self.reported_loss)

    def forget_loss(self) -> None:
        """The loss seen so far was a congestion's (the video was paused for it)."""
        self.reported_loss = 0.0

    def on_report(self, report: RtcpReceiverInfo) -> bool:
        """One report block from the subscriber; True when it changed `reported_loss`."""
        if report.ssrc == self._rtx_ssrc and report.ssrc != self._ssrc:
            self._note_rtt(report)  # a probe's padding: the RTT is all it says about this stream
            return False
        if report.ssrc != self._ssrc:
            return False
        self._note_rtt(report)
        highest, lost = report.highest_sequence, report.packets_lost
        previous, self._last = self._last, (highest, lost)
        if previous is None:
            return False
        self._note_delivered(previous, highest, lost)
        if not self._video:
            return False
        loss = self._loss_in_report(previous, highest, lost)
        if loss is None:
            return False
        self.note_reported_loss(loss)
        return True

    def _note_rtt(self, report: RtcpReceiverInfo) -> None:
        sent_at = self._recent_srs.pop(report.lsr, None)
        rtt = None if sent_at is None or not report.dlsr else time.time() - sent_at - report.dlsr / 65536
        if rtt is not None and rtt > 0:  # not below zero: a report that cannot be timed
            self.rtt = rtt
            self._estimate.note_rtt(rtt, time.monotonic())

    def _note_delivered(self, previous: tuple[int, int], highest: int, cumulative_lost: int) -> None:
        expected = highest - previous[0]
        if not 0 < expected <= self._cache.size:
            return
        sent = 0
        for k in range(1, expected + 1):
            packet = self._cache.get((previous[0] + k) & 0xFFFF)
            if packet is not None:
                sent += len(packet.payload) + RTP_HEADER_BYTES + PACKET_OVERHEAD_BYTES
        lost = min(expected, max(0, cumulative_lost - previous[1]))
        self._estimate.note_delivered(sent * (expected - lost) // expected, time.monotonic())

    def _loss_in_report(self, previous: tuple[int, int], highest: int, cumulative_lost: int) -> Optional[float]:
        expected = highest - previous[0]
        if not 0 < expected < 1 << 15:
            return None
        top = highest & 0xFFFF
        unsent = sum(1 for s in self._unsent if 0 <= seq_diff(top, s) < expected)
        lost = cumulative_lost - previous[1] - unsent
        return min(1.0, max(0, lost) / max(1, expected - unsent))
