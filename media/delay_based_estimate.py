"""Send-side delay-based bandwidth estimate for one subscriber's downlink (GoogCC style).

Transport-wide feedback tells us, for each packet we sent, when it arrived. A queue
building at the bottleneck shows as arrival spacing growing past send spacing; random
loss does not, so only growing delay lowers this estimate (loss is counted and reported
in `loss_ratio`, for the caller to weigh). The pipeline follows draft-ietf-rmcat-gcc-02
and libwebrtc's send-side design: packets grouped into send bursts, a trendline
(regression slope of the smoothed accumulated delay) against an adaptive threshold,
and AIMD rate control bounded by what the receiver acknowledged.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

# Inter-arrival grouping
# Packets sent within this of a group's first one are one burst: the pacer sends them together.
BURST_S = 0.005
# A packet arriving within BURST_S of its group's last, sooner than its send spacing would
# have it (it caught up: jitter or a link releasing a batch), joins that group, within this long.
MAX_BURST_S = 0.1
# Arrival spacing this far off send spacing between two groups is not a queue: the receiver's clock jumped.
CLOCK_JUMP_S = 3.0
# This many groups in a row arriving before their predecessor: our state no longer fits the stream.
REORDERED_RESET = 3
# A send gap this long: the stream paused and what we learned of the queue is stale.
STREAM_TIMEOUT_S = 2.0

# Trendline (delays in ms, as the GCC constants are)
SMOOTHING = 0.9
TREND_WINDOW = 20
TREND_GAIN = 4.0
# The gain grows with the deltas seen up to this many: an early slope counts for less.
TREND_DELTAS_CAP = 60
DELTA_COUNTER_MAX = 1000
K_UP = 0.0087
K_DOWN = 0.039
THRESHOLD_INIT_MS = 12.5
THRESHOLD_MIN_MS = 6.0
THRESHOLD_MAX_MS = 600.0
# A trend this far past the threshold is a real queue (or a spike): the threshold must not chase it.
MAX_ADAPT_OFFSET_MS = 15.0
MAX_THRESHOLD_DT_MS = 100.0
OVERUSE_TIME_MS = 10.0
OVERUSE_SAMPLES = 2

# AIMD
BETA = 0.85
INCREASE_PER_S = 1.08
MAX_INCREASE_DT_S = 1.0
MIN_MULTIPLICATIVE_BPS = 1_000.0
MIN_ADDITIVE_BPS_PER_S = 4_000.0
# Additive increase is about one packet per response time, packets sized as a 30 fps video's.
FRAME_INTERVAL_S = 1 / 30
MTU_BYTES = 1200
RESPONSE_EXTRA_S = 0.1
DEFAULT_RTT_S = 0.2
RTT_GAIN = 0.125
# The estimate may grow to at most this multiple of the acknowledged rate, plus a little so a
# slow encoder's uneven output does not pin it at low rates.
INCREASE_LIMIT_FACTOR = 1.5
INCREASE_LIMIT_EXTRA_BPS = 10_000.0
# While overuse persists, decrease again once per round trip (clamped), sooner if the
# acknowledged rate fell under half the estimate.
REDUCE_INTERVAL_MIN_S = 0.01
REDUCE_INTERVAL_MAX_S = 0.2
# Link capacity learned at overuse: smoothing of its mean and normalized deviation (kbit/s).
CAPACITY_ALPHA = 0.05
CAPACITY_DEV_MIN = 0.4
CAPACITY_DEV_MAX = 2.5

# Acknowledged rate: received bytes in a window of arrival time, kept in buckets so a
# packet costs an index and an add.
ACK_WINDOW_S = 0.5
ACK_BUCKET_S = 0.025
ACK_BUCKETS = round(ACK_WINDOW_S / ACK_BUCKET_S)
# No packet reported received for longer than this past the last that was: the window
# moves on by the excess, so a blackout reads as a falling rate, not the last one frozen.
ACK_STALE_GRACE_S = 0.25

LOSS_WINDOW_S = 1.0


class Usage(enum.Enum):
    NORMAL = "normal"
    OVERUSING = "overusing"
    UNDERUSING = "underusing"


@dataclass(frozen=True, slots=True)
class PacketResult:
    send_time: float  # our clock, s
    arrival_time: Optional[float]  # receiver's clock, s; None = lost
    size: int  # bytes on the wire


class _Trendline:
    """Slope of queueing delay against arrival time, and the overuse detector on it."""

    def __init__(self) -> None:
        self.usage = Usage.NORMAL
        self._num_deltas = 0
        self._first_arrival_ms: Optional[float] = None
        self._accumulated = 0.0
        self._smoothed = 0.0
        # the last TREND_WINDOW (x, y) points as a ring: no object per group
        self._xs = [0.0] * TREND_WINDOW
        self._ys = [0.0] * TREND_WINDOW
        self._count = 0
        self._trend = 0.0
        self._prev_trend = 0.0
        self.threshold = THRESHOLD_INIT_MS
        self._last_threshold_ms: Optional[float] = None
        self._time_over_ms = -1.0
        self._over_count = 0

    def update(self, recv_delta_ms: float, send_delta_ms: float, arrival_ms: float) -> None:
        if self._num_deltas < DELTA_COUNTER_MAX:
            self._num_deltas += 1
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self._accumulated += recv_delta_ms - send_delta_ms
        self._smoothed = SMOOTHING * self._smoothed + (1 - SMOOTHING) * self._accumulated
        slot = self._count % TREND_WINDOW
        self._xs[slot] = arrival_ms - self._first_arrival_ms
        self._ys[slot] = self._smoothed
        self._count += 1
        if self._count >= TREND_WINDOW:
            slope = _slope(self._xs, self._ys)
            if slope is not None:
                self._trend = slope
        self._detect(send_delta_ms, arrival_ms)

    def _detect(self, send_delta_ms: float, now_ms: float) -> None:
        trend = self._trend
        if self._num_deltas < 2:
            self.usage = Usage.NORMAL
            return
        modified = min(self._num_deltas, TREND_DELTAS_CAP) * trend * TREND_GAIN
        if modified > self.threshold:
            if self._time_over_ms < 0:
                # first sample over: count half its interval, as it may have crossed midway
                self._time_over_ms = send_delta_ms / 2
            else:
                self._time_over_ms += send_delta_ms
            self._over_count += 1
            if self._time_over_ms > OVERUSE_TIME_MS and self._over_count >= OVERUSE_SAMPLES:
                # a trend already falling back is a queue draining, not a new overuse
                if trend >= self._prev_trend:
                    self._time_over_ms = 0.0
                    self._over_count = 0
                    self.usage = Usage.OVERUSING
        elif modified < -self.threshold:
            self._time_over_ms = -1.0
            self._over_count = 0
            self.usage = Usage.UNDERUSING
        else:
            self._time_over_ms = -1.0
            self._over_count = 0
            self.usage = Usage.NORMAL
        self._prev_trend = trend
        self._update_threshold(modified, now_ms)

    def _update_threshold(self, modified: float, now_ms: float) -> None:
        if self._last_threshold_ms is None:
            self._last_threshold_ms = now_ms
        magnitude = abs(modified)
        if magnitude > self.threshold + MAX_ADAPT_OFFSET_MS:
            self._last_threshold_ms = now_ms
            return
        k = K_DOWN if magnitude < self.threshold else K_UP
        dt = min(max(now_ms - self._last_threshold_ms, 0.0), MAX_THRESHOLD_DT_MS)
        threshold = self.threshold + k * (magnitude - self.threshold) * dt
        self.threshold = min(max(threshold, THRESHOLD_MIN_MS), THRESHOLD_MAX_MS)
        self._last_threshold_ms = now_ms


def _slope(xs: list[float], ys: list[float]) -> Optional[float]:
    n = len(xs)
    x_mean = sum(xs) / n
    y_mean = sum(ys) / n
    num = 0.0
    den = 0.0
    for x, y in zip(xs, ys):
        dx = x - x_mean
        num += dx * (y - y_mean)
        den += dx * dx
    if den == 0.0:
        return None
    return num / den


class _LinkCapacity:
    """What the link delivered when overuse was detected: where additive increase applies."""

    def __init__(self) -> None:
        self.kbps: Optional[float] = None
        self._deviation = CAPACITY_DEV_MIN

    def reset(self) -> None:
        self.kbps = None

    def _spread(self) -> float:
        assert self.kbps is not None
        return 3 * math.sqrt(self.kbps * self._deviation)

    def upper_bps(self) -> float:
        return math.inf if self.kbps is None else (self.kbps + self._spread()) * 1000

    def lower_bps(self) -> float:
        return 0.0 if self.kbps is None else (self.kbps - self._spread()) * 1000

    def on_overuse(self, acked_bps: float) -> None:
        sample = acked_bps / 1000
        if self.kbps is None:
            self.kbps = sample
        else:
            self.kbps = (1 - CAPACITY_ALPHA) * self.kbps + CAPACITY_ALPHA * sample
        error = self.kbps - sample
        deviation = (1 - CAPACITY_ALPHA) * self._deviation + CAPACITY_ALPHA * error * error / max(self.kbps, 1.0)
        self._deviation = min(max(deviation, CAPACITY_DEV_MIN), CAPACITY_DEV_MAX)


class DelayBasedEstimate:
    """One subscriber's estimate. Feed every transport feedback to `update`; read
    `estimate_bps` (what to send), `usage` (the detector's latest verdict), `loss_ratio`
    and `acknowledged_bps` (for the caller's loss policy: loss never moves the estimate)."""

    def __init__(self, start_bps: float = 300_000, min_bps: float = 30_000, max_bps: float = 20_000_000) -> None:
        self._min_bps = float(min_bps)
        self._max_bps = float(max_bps)
        self._bps = min(max(float(start_bps), self._min_bps), self._max_bps)
        self._last_update: Optional[float] = None  # our clock at the last feedback
        self._last_decrease: Optional[float] = None
        self._capacity = _LinkCapacity()
        self._rtt = DEFAULT_RTT_S
        self._rtt_sampled = False
        self._losses: deque[tuple[float, int, int]] = deque()  # (now, lost, reported) per feedback
        self._lost_sum = 0
        self._reported_sum = 0
        self._reset_stream()

    def _reset_stream(self) -> None:
        """Forget the inter-arrival and trend state, and the arrival-clock-based rate window."""
        self._trendline = _Trendline()
        self._reordered = 0
        self._last_send: Optional[float] = None
        # the group being filled, and the last complete one (send time of its last packet, arrival)
        self._group_first_send: Optional[float] = None
        self._group_send = 0.0
        self._group_first_arrival = 0.0
        self._group_arrival = 0.0
        self._prev_send: Optional[float] = None
        self._prev_arrival = 0.0
        # acknowledged rate: ring of (bucket index, bytes), indices counted from the first arrival
        self._ack_base: Optional[float] = None
        self._ack_index = [-1] * ACK_BUCKETS
        self._ack_bytes = [0] * ACK_BUCKETS
        self._ack_newest = 0.0  # newest arrival, relative to the base
        self._ack_reported_at = 0.0  # our clock when the newest received packet was reported

    @property
    def usage(self) -> Usage:
        return self._trendline.usage

    @property
    def estimate_bps(self) -> float:
        return self._bps

    @property
    def loss_ratio(self) -> float:
        return self._lost_sum / self._reported_sum if self._reported_sum else 0.0

    def update(self, packets: Sequence[PacketResult], now: float) -> None:
        """One feedback's packets, in send order; `now` is our clock when it arrived."""
        lost = 0
        newest_sent: Optional[float] = None
        for p in packets:
            arrival = p.arrival_time
            if arrival is None:
                lost += 1
                continue
            send = p.send_time
            if newest_sent is None or send > newest_sent:
                newest_sent = send
            if self._last_send is not None and send - self._last_send > STREAM_TIMEOUT_S:
                self._reset_stream()
            if self._last_send is None or send > self._last_send:
                self._last_send = send
            self._add_to_group(send, arrival)  # first: it may reset the arrival-clock state
            self._add_acked(arrival, p.size)
        if newest_sent is not None:
            self._ack_reported_at = now
            sample = max(now - newest_sent, 0.0)
            if self._rtt_sampled:
                self._rtt += RTT_GAIN * (sample - self._rtt)
            else:
                self._rtt, self._rtt_sampled = sample, True
        self._count_losses(lost, len(packets), now)
        self._control(now)

    def acknowledged_bps(self, now: float) -> Optional[float]:
        """Bits per second the receiver got over the last ACK_WINDOW_S of arrival time; None
        until its arrivals span that long."""
        if self._ack_base is None or self._ack_newest < ACK_WINDOW_S:
            return None
        end = self._ack_newest + max(now - self._ack_reported_at - ACK_STALE_GRACE_S, 0.0)
        end_index = int(end / ACK_BUCKET_S)
        oldest_index = end_index - ACK_BUCKETS + 1
        total = 0
        for index, nbytes in zip(self._ack_index, self._ack_bytes):
            if oldest_index <= index <= end_index:
                total += nbytes
        elapsed = end - oldest_index * ACK_BUCKET_S
        return total * 8 / elapsed

    def set_estimate(self, bps: float, now: float) -> None:
        """A probe got through at `bps`: start from there (never lowers the estimate)."""
        bps = min(bps, self._max_bps)
        if bps > self._bps:
            self._bps = bps
            if bps > self._capacity.upper_bps():
                # past what overuse taught: creeping up additively from here would take minutes
                self._capacity.reset()

    # ---- inter-arrival -------------------------------------------------------------

    def _add_to_group(self, send: float, arrival: float) -> None:
        first = self._group_first_send
        if first is None:
            self._start_group(send, arrival)
            return
        if send < first:
            return  # sent before the group being filled: out of order, no delta to take from it
        if send - first <= BURST_S or self._is_burst(send, arrival):
            if send > self._group_send:
                self._group_send = send
            if arrival > self._group_arrival:
                self._group_arrival = arrival
            return
        # a packet of a later burst: the current group is complete
        if self._prev_send is not None:
            send_delta = self._group_send - self._prev_send
            arrival_delta = self._group_arrival - self._prev_arrival
            if abs(arrival_delta - send_delta) > CLOCK_JUMP_S:
                self._reset_stream()
                self._last_send = send
                self._start_group(send, arrival)
                return
            if arrival_delta < 0:
                # the group overtook its predecessor: no meaningful delta, and it is dropped
                self._reordered += 1
                if self._reordered >= REORDERED_RESET:
                    self._reset_stream()
                    self._last_send = send
                self._start_group(send, arrival)
                return
            self._reordered = 0
            self._trendline.update(arrival_delta * 1000, send_delta * 1000, self._group_arrival * 1000)
        self._prev_send = self._group_send
        self._prev_arrival = self._group_arrival
        self._start_group(send, arrival)

    def _is_burst(self, send: float, arrival: float) -> bool:
        arrival_delta = arrival - self._group_arrival
        return (arrival_delta - (send - self._group_send) < 0 and arrival_delta <= BURST_S
                and arrival - self._group_first_arrival < MAX_BURST_S)

    def _start_group(self, send: float, arrival: float) -> None:
        self._group_first_send = send
        self._group_send = send
        self._group_first_arrival = arrival
        self._group_arrival = arrival

    # ---- acknowledged rate and loss ------------------------------------------------

    def _add_acked(self, arrival: float, size: int) -> None:
        if self._ack_base is None:
            self._ack_base = arrival
        t = arrival - self._ack_base
        if t < 0:
            return  # before the first arrival we counted: it would read as a rate we cannot place
        index = int(t / ACK_BUCKET_S)
        slot = index % ACK_BUCKETS
        held = self._ack_index[slot]
        if held == index:
            self._ack_bytes[slot] += size
        elif held < index:
            self._ack_index[slot] = index
            self._ack_bytes[slot] = size
        # else older than the window: dropped
        if t > self._ack_newest:
            self._ack_newest = t

    def _count_losses(self, lost: int, reported: int, now: float) -> None:
        if reported:
            self._losses.append((now, lost, reported))
            self._lost_sum += lost
            self._reported_sum += reported
        losses = self._losses
        while losses and losses[0][0] <= now - LOSS_WINDOW_S:
            _, old_lost, old_reported = losses.popleft()
            self._lost_sum -= old_lost
            self._reported_sum -= old_reported

    # ---- AIMD ----------------------------------------------------------------------

    def _control(self, now: float) -> None:
        acked = self.acknowledged_bps(now)
        # increases scale with the time since the last feedback (held or not), so none jumps
        dt = 0.0 if self._last_update is None else min(max(now - self._last_update, 0.0), MAX_INCREASE_DT_S)
        self._last_update = now
        usage = self._trendline.usage
        if usage is Usage.OVERUSING:
            if self._time_to_reduce(now, acked):
                self._decrease(now, acked)
        elif usage is Usage.NORMAL:
            self._increase(dt, acked)
        # underusing: hold, the queue is draining and increasing now would refill it

    def _time_to_reduce(self, now: float, acked: Optional[float]) -> bool:
        if self._last_decrease is None:
            return True
        interval = min(max(self._rtt, REDUCE_INTERVAL_MIN_S), REDUCE_INTERVAL_MAX_S)
        if now - self._last_decrease >= interval:
            return True
        return acked is not None and acked < 0.5 * self._bps

    def _decrease(self, now: float, acked: Optional[float]) -> None:
        # without an acknowledged rate yet, the estimate stands in for it
        throughput = acked if acked is not None else self._bps
        decreased = max(BETA * throughput, self._min_bps)
        if decreased < self._bps:
            self._bps = decreased
        if throughput < self._capacity.lower_bps():
            self._capacity.reset()  # the link changed: re-learn it from this sample
        self._capacity.on_overuse(throughput)
        self._last_decrease = now

    def _increase(self, dt: float, acked: Optional[float]) -> None:
        if acked is None:
            return  # nothing delivered to measure yet: the start value stands
        if acked > self._capacity.upper_bps():
            self._capacity.reset()  # delivering past what overuse taught: the link has grown
        limit = INCREASE_LIMIT_FACTOR * acked + INCREASE_LIMIT_EXTRA_BPS
        bps = self._bps
        if bps >= limit:
            return
        if self._capacity.kbps is not None:
            frame_bits = bps * FRAME_INTERVAL_S
            packets_per_frame = math.ceil(frame_bits / (MTU_BYTES * 8))
            packet_bits = frame_bits / max(packets_per_frame, 1)
            rate = max(packet_bits / (self._rtt + RESPONSE_EXTRA_S), MIN_ADDITIVE_BPS_PER_S)
            increase = rate * dt
        else:
            increase = max(bps * (INCREASE_PER_S**dt - 1), MIN_MULTIPLICATIVE_BPS)
        self._bps = min(min(bps + increase, limit), self._max_bps)
