"""Whether a down-track answers a subscriber's NACK, and what the NACKs say about its downlink.

- **Downlink loss** is measured from video NACKs, per LOSS_SAMPLE_PACKETS first
  transmissions, not from receiver reports: the copies sent for a lossy link count as
  received in a report and would hide the very loss that made them necessary. Loss on a
  congested link is the queue's, not the link's: it is no sample.
- **Crossed NACKs.** A packet that went out late (recovered from the publisher) may be
  NACKed by a subscriber that asked while it was still missing upstream: a NACK this soon
  after the packet left (CROSSING_RTTS round trips) crossed it. Not downlink loss; on a clean
  downlink not answered (as libwebrtc's senders judge a NACK for a packet resent less than
  an RTT ago), on a lossy one a cheap second chance for the packet it waited on longest.
- **Stale NACKs.** A subscriber still asking for a video packet STALE_NACK_S after it was
  first sent is stuck: a keyframe repairs its picture. One request per late stretch (the
  cache's reach), not one per NACK of it.

Decisions only: the down-track sends (media/downtrack.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .packet_cache import SentPacket
from .receiver_reports import DEFAULT_RTT_S
from .redundancy import LossEstimate
from .seqnum import seq_diff

# A NACK this many RTTs after a packet went out late was sent before the packet could have
# arrived (the subscriber NACKs about once per RTT, and stops once it has it). Over 1: at
# exactly one RTT, scheduling jitter let ~20 % of those NACKs through on a clean downlink.
CROSSING_RTTS = 1.5
# Not sooner: at 30 % random loss a keyframe (tens of packets, each as lossy) arrives later
# than a few more retransmission rounds do (docs/BENCHMARKS.md, "Stale NACKs").
STALE_NACK_S = 1.0
# How far back a stale-NACK keyframe request still covers a packet: the video cache's reach.
STALE_STRETCH_PACKETS = 1024
# Video packets per downlink-loss sample (a few per second at 480p-720p).
LOSS_SAMPLE_PACKETS = 50


@dataclass(frozen=True)
class NackAnswer:
    answer: bool  # retransmit it (budget permitting)
    keyframe: bool  # ask the source for a keyframe: the subscriber is stuck


class NackAnswers:
    def __init__(self, *, video: bool, downlink_loss: LossEstimate) -> None:
        self._video = video
        self.downlink_loss = downlink_loss
        self.crossed = 0  # NACKs for late packets answered by their own late sending
        self.stale_keyframes = 0
        self._stale_after_seq: Optional[int] = None  # newest packet a stale NACK already escalated
        self._sample_sent = 0
        self.nacked_in_sample = 0  # first transmissions NACKed in the sample under way

    def first_sent(self) -> bool:
        """Per video packet sent for the first time, in order; True when that completed a loss
        sample (the downlink's loss estimate changed)."""
        self._sample_sent += 1
        if self._sample_sent < LOSS_SAMPLE_PACKETS:
            return False
        self.downlink_loss.add(min(self.nacked_in_sample, self._sample_sent), self._sample_sent)
        self._sample_sent = self.nacked_in_sample = 0
        return True

    def on_nack(self, sent: SentPacket, now: float, *, rtt: Optional[float], congested: bool, paused: bool,
                newest_sent: Optional[int]) -> NackAnswer:
        """A NACK for `sent`, still in the cache. `newest_sent`: the cache's newest number."""
        if sent.late and now - sent.sent_at < CROSSING_RTTS * (rtt if rtt is not None else DEFAULT_RTT_S):
            self.crossed += 1
            return NackAnswer(answer=self.downlink_loss.copies > 1, keyframe=False)
        keyframe = False
        if self._video and not congested:
            if not sent.nacked:
                sent.nacked = True
                self.nacked_in_sample += 1
            if now - sent.sent_at > STALE_NACK_S and not paused:
                keyframe = self._escalate(sent.sequence_number, newest_sent)
        return NackAnswer(answer=True, keyframe=keyframe)

    def _escalate(self, seq: int, newest_sent: Optional[int]) -> bool:
        anchor = self._stale_after_seq
        # at or before the packet the last request covered; an anchor further back than the
        # cache reaches is from an old stretch (and 16-bit order flips 32768 packets on)
        if anchor is not None and 0 <= seq_diff(anchor, seq) < STALE_STRETCH_PACKETS:
            return False
        self._stale_after_seq = newest_sent
        self.stale_keyframes += 1
        return True
