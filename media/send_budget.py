"""What we may send one subscriber: audio first, video as it fits, recovery from what is left.

Every down-track of a subscriber shares one budget (one transport, one bottleneck).
While the downlink has not shown itself narrow nothing is limited: on a link that
loses packets at random the recovery traffic (retransmissions, copies, downlink
FEC) is what keeps the call alive. Once a queue has built at the bottleneck (RTT
over the path's, media/downlink_estimate.py) the downlink counts as narrow for a
while: the pacer (media/pacer.py) then releases packets at the estimated rate,
audio first, and recovery traffic goes only when no media is waiting for the
rate, so it can no longer multiply the load on a link that is already full.
Video that does not fit is paused whole by the downlink controller
(media/downlink_control.py), never thinned packet by packet.
"""

from __future__ import annotations

from typing import Optional

from .downlink_estimate import DownlinkEstimate
from .pacer import VIDEO, Pacer
from .rate_meter import RateMeter
from .transport_sequence import TransportSequencer
from .twcc_feedback import TransportFeedback

# Under congestion, aim the whole flow below the estimate so the bottleneck's queue drains.
CONGESTED_TARGET_SHARE = 0.85
# A downlink that queued once stays paced this long: its next burst would queue again.
NARROW_MEMORY_S = 30.0
# Video waiting this long in the pacer means the videos forwarded do not fit the rate
# (a 720p keyframe alone waits about half a second at 1 Mbit/s).
PACER_CONGESTED_S = 1.0
# SRTP, UDP and IP bytes per packet on top of the RTP packet.
PACKET_OVERHEAD_BYTES = 38


class SendBudget:
    def __init__(self, estimate: Optional[DownlinkEstimate] = None, pacer: Optional[Pacer] = None) -> None:
        self.estimate = estimate if estimate is not None else DownlinkEstimate()
        # numbers what goes out on the transport, when transport-cc is negotiated
        self.sequencer = TransportSequencer()
        self.pacer = pacer if pacer is not None else Pacer(self.sequencer.stamp)
        self.audio = RateMeter()
        self.video = RateMeter()
        self.recovery = RateMeter()
        self.padding = RateMeter()
        self._narrow_until = float("-inf")
        self._pacer_congested = False
        self.recovery_refused = 0

    @property
    def congested(self) -> bool:
        """A queue is building: at the bottleneck (RTT), or here in the pacer (video waiting)."""
        return self.estimate.congested or self._pacer_congested

    @property
    def narrow(self) -> bool:
        return self.pacer.rate_bps is not None

    def note_media(self, nbytes: int, now: float, audio: bool) -> None:
        (self.audio if audio else self.video).add(nbytes + PACKET_OVERHEAD_BYTES, now)

    def note_padding(self, nbytes: int, now: float) -> None:
        self.padding.add(nbytes + PACKET_OVERHEAD_BYTES, now)

    def media_bps(self, now: float) -> float:
        return self.audio.bps(now) + self.video.bps(now)

    def note_transport_feedback(self, feedback: TransportFeedback, now: float) -> None:
        self.estimate.note_transport_feedback(self.sequencer.results(feedback, now, PACKET_OVERHEAD_BYTES), now)

    def estimate_bps(self, now: float) -> Optional[float]:
        """What the downlink carries: its measured capacity while it is narrow, else the
        receivers' estimates (None before any)."""
        if self.narrow and self.estimate.capacity is not None:
            return self.estimate.capacity
        return self.estimate.bitrate(now, self.sent_bps(now))

    def sent_bps(self, now: float) -> float:
        return self.media_bps(now) + self.recovery.bps(now) + self.padding.bps(now)

    def update(self, now: float) -> None:
        """Re-derive the pacing rate from the estimate (a few times a second)."""
        sent = self.sent_bps(now)
        estimate = self.estimate.bitrate(now, sent)
        self._pacer_congested = self.pacer.waiting_s(VIDEO, now) > PACER_CONGESTED_S
        if self.estimate.congested:
            self._narrow_until = now + NARROW_MEMORY_S
            # what arrives stands for the link only while the videos fill it: with them paused,
            # audio alone is reported every few seconds and would read as a link of a few kbit/s
            if self.video.bps(now) > self.audio.bps(now):
                self.estimate.note_congested(now)
        if now >= self._narrow_until:
            self.estimate.forget_capacity()
            self.pacer.set_rate(None, now)
            return
        # narrow: what the link was seen to carry; once the queue is gone, more if its receivers
        # estimate more (a capacity measured once would hold back a link that got better)
        capacity = self.estimate.capacity
        if self.estimate.congested:
            rate = capacity if capacity is not None else estimate
            if rate is not None:
                rate = min(rate, sent) * CONGESTED_TARGET_SHARE
        else:
            rate = estimate if capacity is None else capacity if estimate is None else max(capacity, estimate)
        self.pacer.set_rate(rate, now)

    def allow_recovery(self, nbytes: int, now: float) -> bool:
        """Whether a recovery packet of `nbytes` (RTP) may go now; counted if so."""
        if self.estimate.congested or (self.narrow and self.pacer.backlog):
            self.recovery_refused += 1
            return False
        self.recovery.add(nbytes + PACKET_OVERHEAD_BYTES, now)
        return True

    def _transport_cc_summary(self) -> Optional[dict]:
        if not self.sequencer.enabled:
            return None
        estimator = self.estimate.delay_based
        # what the feedback reported lost (copies the receiver discarded as replays count too)
        loss = None if estimator is None else round(estimator.loss_ratio, 3)
        return {**self.sequencer.summary(), "reported_loss": loss}

    def summary(self, now: float) -> dict:
        estimate = self.estimate_bps(now)
        return {
            "estimate_kbps": None if estimate is None else round(estimate / 1000),
            "audio_kbps": round(self.audio.bps(now) / 1000),
            "video_kbps": round(self.video.bps(now) / 1000),
            "recovery_kbps": round(self.recovery.bps(now) / 1000),
            "padding_kbps": round(self.padding.bps(now) / 1000),
            "queueing_ms": round(self.estimate.queueing_delay * 1000),
            "capacity_kbps": None if self.estimate.capacity is None else round(self.estimate.capacity / 1000),
            "delivered_kbps": round(self.estimate.delivered.bps(now) / 1000),
            "congested": self.congested,
            "recovery_refused": self.recovery_refused,
            "transport_cc": self._transport_cc_summary(),
            **self.pacer.summary(now),
        }
