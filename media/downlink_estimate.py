"""What one subscriber's downlink can carry, and whether it is congested now.

Two signals, both from the subscriber's own RTCP:
- its receivers' bandwidth estimates (REMB). They are delay-based (inter-arrival
  times of abs-send-time stamped packets), so random loss leaves them alone while a
  queue building at a bottleneck pulls them down. A browser sends one REMB for all
  the streams it receives; aiortc one per stream, so fresh figures for disjoint
  stream sets add up.
- the round-trip time of its receiver reports. A queue filling at the bottleneck
  shows as RTT above the path's own (the lowest seen lately): congestion. Random
  loss does not raise it. That is how congestion is told from random loss.

Once a queue has built, what the receivers say arrived (their reports' packet
counts, against what was sent) is what the link carries: the capacity. It holds
until a probe that got through (padding at a higher rate, no queue building)
raises it, or a new queue lowers it.

A browser that negotiated transport-cc (media/sdp_transport_cc.py) sends no REMB;
it reports when each packet arrived instead, some ten times a second. Once that
feedback comes, it replaces both signals: the one-way delay of each packet over the
path's lowest stands for the queue (as the RTT did, but per packet and without
the receivers' report timing), the bytes reported arrived for what the link
delivers, and a delay-gradient estimator (media/delay_based_estimate.py) for the
receivers' estimates; its overuse counts as an estimate falling.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from .delay_based_estimate import DelayBasedEstimate, PacketResult, Usage
from .rate_meter import RateMeter

# A REMB older than this no longer counts (receivers send one every second or so).
REMB_FRESH_S = 3.0
# Path RTT: the lowest sample over this long.
BASE_RTT_WINDOW_S = 30.0
# Queueing delay (RTT over the path's) that means congestion: above what jitter and
# the receivers' RTCP timing add, well below the 200 ms that makes audio late.
CONGESTED_QUEUE_S = 0.08
# A single sample this many times over the mark counts as over it, smoothed or not.
SINGLE_SAMPLE_FACTOR = 2.0
# Samples in a row over the mark that make congestion (bad Wi-Fi's jitter, or a stalled
# event loop, put one over now and then: at 1 it paused a video on the bad-wifi profile).
CONGESTED_SAMPLES = 2
# Weight of a new RTT sample: a single late report must not read as a queue.
RTT_SMOOTHING = 0.5
# The receivers' figures count up to this multiple of what was sent lately: beyond it they
# are guesses no traffic backed (early ones, or inflated by a burst), and only a probe goes higher.
SENT_CAP_FACTOR = 2.0
# The delivered rate needs this long of reports before it stands for the link.
DELIVERED_WINDOW_S = 2.0
# Transport-cc feedback comes ten times a second: what arrived over this long is what the
# link carries now, a step down included (the 2 s window still remembers the wider link).
RECENT_DELIVERED_S = 0.5
# A receiver estimate this far below its previous one: it saw delay growing (a queue). An
# overuse cuts an AIMD estimate to 0.85 of what arrives; smaller steps are its noise, and at
# 0.95 they failed most probes from aiortc receivers on a link that had room (BENCHMARKS.md).
REMB_DROP = 0.9
# How long a probe's rate stands without a receiver estimate as high.
PROBE_HOLD_S = 6.0
# Where the delay-based estimate starts when no REMB came before the first feedback.
DEFAULT_START_BPS = 300_000


class DownlinkEstimate:
    def __init__(self) -> None:
        # SSRCs a REMB covered -> (bit/s, when)
        self._remb: dict[frozenset[int], tuple[int, float]] = {}
        self._held: Optional[float] = None  # the last sum known, while nothing fresh arrives
        self._rtts: deque[tuple[float, float]] = deque()  # (when, rtt) within the base window
        self._latest_rtt: Optional[float] = None
        self._probe: Optional[tuple[float, float]] = None  # (bit/s, until)
        self.rtt_samples = 0
        self.remb_drops = 0  # receiver estimates that fell: their sign of a queue building
        self._quiet_until = float("-inf")  # estimates falling before this are our own doing
        self._latest_raw_queueing = 0.0
        self._samples_over = 0  # RTT samples in a row over the mark
        self.delivered = RateMeter(bucket_s=0.25, buckets=int(DELIVERED_WINDOW_S / 0.25))
        self._recent_delivered = RateMeter(bucket_s=0.1, buckets=int(RECENT_DELIVERED_S / 0.1))
        self._delivered_since: Optional[float] = None
        self.delivered_bytes = 0
        self.capacity: Optional[float] = None  # bit/s the link carried under a queue, or a probe proved
        self.worst_queueing = 0.0  # the most any single sample showed since `mark_queueing`
        # from the first transport-cc feedback on: the delay-based estimate, in place of REMB and RTT
        self.delay_based: Optional[DelayBasedEstimate] = None
        # when the packet of the newest transport-cc delay sample was sent: what feedback covers so far
        self.newest_sample_sent_at: Optional[float] = None
        self._usage = Usage.NORMAL

    def note_remb(self, bitrate: int, ssrcs: frozenset[int], now: float) -> None:
        if self.delay_based is not None:
            return  # transport-cc feedback times every packet: a receiver's own estimate adds nothing
        # A browser's next REMB may cover a different set of streams: it replaces what it overlaps.
        for key in [k for k in self._remb if k & ssrcs]:
            if bitrate < self._remb[key][0] * REMB_DROP and now >= self._quiet_until:
                self.remb_drops += 1
            del self._remb[key]
        self._remb[ssrcs] = (bitrate, now)
        self._hold_fresh(now)

    def note_paused(self, now: float) -> None:
        """A stream stopped: its receiver's estimate falls with what it receives, not with a queue."""
        self._quiet_until = now + REMB_FRESH_S

    @property
    def transport_cc(self) -> bool:
        """Whether the subscriber's transport-cc feedback drives this estimate."""
        return self.delay_based is not None

    def note_transport_feedback(self, packets: list[PacketResult], now: float) -> None:
        """One transport-cc feedback: each packet's send time, arrival (None: lost) and size."""
        if self.delay_based is None:
            # what was sent before stands for what the link is known to take, as a REMB would
            self.delay_based = DelayBasedEstimate(start_bps=self._held or DEFAULT_START_BPS)
        estimator = self.delay_based
        estimator.update(packets, now)
        usage = estimator.usage
        if usage is Usage.OVERUSING and self._usage is not Usage.OVERUSING and now >= self._quiet_until:
            self.remb_drops += 1
        self._usage = usage
        received = [p for p in packets if p.arrival_time is not None]
        if not received:
            return
        self._add_delivered(sum(p.size for p in received), now)
        # the newest packet's one-way delay: the clocks differ by a constant, which the
        # path's lowest takes out as it takes out the propagation delay
        newest = received[-1]
        assert newest.arrival_time is not None
        self._note_delay(newest.arrival_time - newest.send_time, now)
        self.newest_sample_sent_at = max(self.newest_sample_sent_at or newest.send_time, newest.send_time)

    def note_rtt(self, rtt_s: float, now: float) -> None:
        """A receiver report's RTT (ignored once transport-cc feedback times every packet)."""
        if self.delay_based is None:
            self._note_delay(rtt_s, now)

    def _note_delay(self, rtt_s: float, now: float) -> None:
        self.rtt_samples += 1
        latest = self._latest_rtt
        smoothed = self._latest_rtt = rtt_s if latest is None else latest + RTT_SMOOTHING * (rtt_s - latest)
        # the path's RTT: the lowest smoothed value (a raw minimum sits jitter below the mean)
        rtts = self._rtts
        while rtts and rtts[-1][1] >= smoothed:  # monotonic queue: the window's minimum is at the front
            rtts.pop()
        rtts.append((now, smoothed))
        while rtts[0][0] < now - BASE_RTT_WINDOW_S:
            rtts.popleft()
        self._latest_raw_queueing = rtt_s - rtts[0][1]
        self.worst_queueing = max(self.worst_queueing, self._latest_raw_queueing)
        # a sample far over the mark counts at once (a link stepping down fills its queue in a
        # blink), but never one alone: a stall anywhere on the way can delay a single report
        over = (self.queueing_delay > CONGESTED_QUEUE_S
                or self._latest_raw_queueing > CONGESTED_QUEUE_S * SINGLE_SAMPLE_FACTOR)
        self._samples_over = self._samples_over + 1 if over else 0

    @property
    def latest_queueing(self) -> float:
        """The newest sample's queueing delay, unsmoothed (0 before any)."""
        return self._latest_raw_queueing

    def mark_queueing(self) -> None:
        """Start watching the worst single-sample queueing delay afresh (a probe begins)."""
        self.worst_queueing = 0.0

    def note_delivered(self, nbytes: int, now: float) -> None:
        """What a receiver report says arrived (transport-cc feedback says it better)."""
        if self.delay_based is None:
            self._add_delivered(nbytes, now)

    def _add_delivered(self, nbytes: int, now: float) -> None:
        if self._delivered_since is None:
            self._delivered_since = now
        self.delivered.add(nbytes, now)
        self._recent_delivered.add(nbytes, now)
        self.delivered_bytes += nbytes

    def delivered_now_bps(self, now: float) -> float:
        """What the link delivers lately: over the last half second with transport-cc feedback,
        over the delivered window with receiver reports (a few a second per stream at most)."""
        return (self._recent_delivered if self.delay_based is not None else self.delivered).bps(now)

    def note_congested(self, now: float) -> None:
        """A queue is building: what arrives now is what the link carries."""
        if self._delivered_since is not None and now - self._delivered_since >= DELIVERED_WINDOW_S:
            delivered = self.delivered.bps(now)
            if delivered > 0:  # no report in the window says nothing (browsers report audio every few seconds)
                self.capacity = delivered

    def forget_capacity(self) -> None:
        self.capacity = None

    def note_probe_ok(self, bitrate: float, now: float) -> None:
        self._probe = (bitrate, now + PROBE_HOLD_S)
        if self.delay_based is not None:
            self.delay_based.set_estimate(bitrate, now)
        self.capacity = max(self.capacity or 0.0, bitrate)

    def vouched(self, now: float) -> Optional[float]:
        """The rate the latest probe that got through vouches for, while it stands."""
        if self._probe is None or now > self._probe[1]:
            return None
        return self._probe[0]

    @property
    def queueing_delay(self) -> float:
        """Recent RTT (smoothed) over the path's, in seconds (0 before any RTT is known)."""
        if self._latest_rtt is None or not self._rtts:
            return 0.0
        return max(0.0, self._latest_rtt - self._rtts[0][1])

    @property
    def congested(self) -> bool:
        return self._samples_over >= CONGESTED_SAMPLES

    def _hold_fresh(self, now: float) -> None:
        """Hold the sum of the fresh figures; with none fresh, the last sum stays."""
        fresh = [rate for rate, at in self._remb.values() if now - at <= REMB_FRESH_S]
        if fresh:
            self._held = float(sum(fresh))

    def bitrate(self, now: float, sent_bps: float) -> Optional[float]:
        """Bit/s the downlink is estimated to carry, given what was sent over the last second;
        None before any estimate arrived."""
        if self.delay_based is not None:
            self._held = self.delay_based.estimate_bps
        else:
            self._hold_fresh(now)
        estimate = None if self._held is None else min(self._held, SENT_CAP_FACTOR * sent_bps)
        if self._probe is not None:
            if now > self._probe[1]:
                self._probe = None
            else:
                estimate = max(estimate or 0.0, self._probe[0])
        return estimate
