"""DelayBasedEstimate against a small simulated bottleneck (simulated time only: no wall clock).

The simulator: a paced sender (1200-byte packets, evenly spaced at the rate the test
picks each 100 ms), a drop-tail queue of given capacity and depth, fixed propagation
delay each way, optional seeded random loss and arrival jitter after the queue, and
transport feedback every 100 ms covering the in-order prefix of packets the receiver
has settled (arrived, or lost before a later one arrived).
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest

from media.delay_based_estimate import ACK_WINDOW_S, DelayBasedEstimate, PacketResult, Usage

PACKET_BYTES = 1200
FEEDBACK_S = 0.1
# What truly reached the receiver is measured over as long as the estimate's window: with
# random loss, shorter and longer windows differ by more than the noise the tests allow.
DELIVERED_WINDOW_S = ACK_WINDOW_S


@dataclass
class Step:
    now: float  # our clock, after the feedback was applied
    send_bps: float
    estimate_bps: float
    usage: Usage
    queue_s: float  # the bottleneck's backlog, in seconds of its capacity
    loss_ratio: float
    acked_bps: Optional[float]
    delivered_bps: float  # what truly reached the receiver over the last DELIVERED_WINDOW_S


@dataclass
class Link:
    capacity_bps: float
    queue_limit_s: float
    propagation_s: float = 0.02
    loss: float = 0.0
    jitter_s: float = 0.0  # arrival jitter, uniform in +-jitter_s
    clock_offset_s: float = 0.0  # receiver clock minus ours
    seed: int = 1
    estimator: DelayBasedEstimate = field(default_factory=DelayBasedEstimate)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.now = 0.0
        self.next_send = 0.0
        self.link_free = 0.0
        # packets sent, not yet in a feedback: (send time, true arrival or None)
        self.pending: list[tuple[float, Optional[float]]] = []
        self.delivered: deque[tuple[float, int]] = deque()  # (true arrival, bytes) over the last second or so
        self.steps: list[Step] = []

    def _send(self, t: float) -> None:
        backlog = self.link_free - t
        if backlog > self.queue_limit_s:
            self.pending.append((t, None))  # drop-tail
            return
        self.link_free = max(self.link_free, t) + PACKET_BYTES * 8 / self.capacity_bps
        arrival = self.link_free + self.propagation_s
        if self.jitter_s:
            arrival += self.rng.uniform(-self.jitter_s, self.jitter_s)
        if self.loss and self.rng.random() < self.loss:
            self.pending.append((t, None))
            return
        self.pending.append((t, arrival))
        self.delivered.append((arrival, PACKET_BYTES))

    def _feedback(self) -> list[PacketResult]:
        """What a receiver's feedback sent one propagation delay ago covers."""
        horizon = self.now - self.propagation_s
        settled = 0
        for k, (_, arrival) in enumerate(self.pending):
            if arrival is None:
                continue
            if arrival > horizon:
                break
            settled = k + 1
        batch, self.pending = self.pending[:settled], self.pending[settled:]
        return [PacketResult(send, None if arrival is None else arrival + self.clock_offset_s, PACKET_BYTES)
                for send, arrival in batch]

    def run(self, seconds: float, rate: Callable[["Link"], float]) -> list[Step]:
        """Steps of this run only (all of them stay in `self.steps`)."""
        start = len(self.steps)
        for _ in range(round(seconds / FEEDBACK_S)):
            send_bps = rate(self)
            end = self.now + FEEDBACK_S
            self.next_send = max(self.next_send, self.now)
            while self.next_send < end:
                self._send(self.next_send)
                self.next_send += PACKET_BYTES * 8 / send_bps
            self.now = end
            self.estimator.update(self._feedback(), self.now)
            horizon = self.now - self.propagation_s
            while self.delivered and self.delivered[0][0] <= horizon - DELIVERED_WINDOW_S:
                self.delivered.popleft()
            delivered = sum(n for t, n in self.delivered if t <= horizon)
            self.steps.append(Step(
                now=self.now, send_bps=send_bps, estimate_bps=self.estimator.estimate_bps,
                usage=self.estimator.usage, queue_s=max(self.link_free - self.now, 0.0),
                loss_ratio=self.estimator.loss_ratio, acked_bps=self.estimator.acknowledged_bps(self.now),
                delivered_bps=delivered * 8 / DELIVERED_WINDOW_S))
        return self.steps[start:]


def constant(bps: float) -> Callable[[Link], float]:
    return lambda link: bps


def following(cap_bps: float) -> Callable[[Link], float]:
    return lambda link: min(link.estimator.estimate_bps, cap_bps)


def first(steps: list[Step], usage: Usage) -> Optional[float]:
    return next((s.now for s in steps if s.usage is usage), None)


def test_sending_twice_the_bottleneck_is_overuse_and_the_estimate_falls_to_what_it_delivers():
    # a sender that started at 2 Mbit/s (a probe said so) on a 1 Mbit/s link with a deep buffer
    link = Link(1_000_000, queue_limit_s=3.0, estimator=DelayBasedEstimate(start_bps=2_000_000))
    link.run(3.0, constant(800_000))  # under the link: no queue
    assert all(s.usage is not Usage.OVERUSING for s in link.steps)
    assert link.estimator.estimate_bps == 2_000_000  # held: nothing says the link is smaller yet
    steps = link.run(2.0, constant(2_000_000))  # the queue grows from t=3 s
    overuse_at = first(steps, Usage.OVERUSING)
    assert overuse_at is not None and overuse_at - 3.0 <= 1.0
    assert steps[-1].queue_s > 1.5  # still growing at the end: the delay signal holds
    assert steps[-1].usage is Usage.OVERUSING
    assert 600_000 <= steps[-1].estimate_bps <= 1_100_000


def test_a_sender_following_the_estimate_converges_on_the_link_with_a_short_queue():
    link = Link(1_000_000, queue_limit_s=0.3)
    steps = link.run(40.0, following(5_000_000))
    last = [s for s in steps if s.now > 30.0]
    assert all(500_000 <= s.estimate_bps <= 1_200_000 for s in last)
    assert statistics.mean(s.estimate_bps for s in last) > 800_000  # uses the link, not just stays safe
    queues = sorted(s.queue_s for s in last)
    assert queues[len(queues) // 2] < 0.03  # median
    assert queues[-1] < 0.1
    assert all(s.loss_ratio == 0 for s in last)  # never filled the 300 ms buffer


def test_random_loss_without_delay_never_lowers_the_estimate():
    link = Link(10_000_000, queue_limit_s=0.3, seed=7, estimator=DelayBasedEstimate(start_bps=1_000_000))
    link.run(10.0, constant(1_000_000))
    before = link.estimator.estimate_bps
    link.loss = 0.3
    steps = link.run(20.0, constant(1_000_000))
    assert all(s.estimate_bps >= before for s in steps)
    assert all(s.usage is not Usage.OVERUSING for s in link.steps)
    settled = [s.loss_ratio for s in steps if s.now > 12.0]
    assert statistics.mean(settled) == pytest.approx(0.3, abs=0.03)
    assert all(0.1 < r < 0.5 for r in settled)


def test_a_capacity_drop_is_overuse_within_a_second_and_the_estimate_follows_within_two():
    link = Link(3_000_000, queue_limit_s=0.5, estimator=DelayBasedEstimate(start_bps=2_500_000))
    link.run(15.0, following(5_000_000))
    assert link.estimator.estimate_bps > 2_000_000
    link.capacity_bps = 500_000
    steps = link.run(5.0, following(5_000_000))
    overuse_at = first(steps, Usage.OVERUSING)
    assert overuse_at is not None and overuse_at - 15.0 <= 1.0
    under_at = next((s.now for s in steps if s.estimate_bps < 600_000), None)
    assert under_at is not None and under_at - 15.0 <= 2.0
    assert min(s.estimate_bps for s in steps) > 250_000  # backs off to the link, not to the floor


def test_a_constant_receiver_clock_offset_changes_nothing():
    plain = Link(1_000_000, queue_limit_s=0.3)
    offset = Link(1_000_000, queue_limit_s=0.3, clock_offset_s=1000.0)
    plain.run(25.0, following(5_000_000))
    offset.run(25.0, following(5_000_000))
    assert any(b.estimate_bps < a.estimate_bps for a, b in zip(plain.steps, plain.steps[1:]))  # overuse included
    for a, b in zip(plain.steps, offset.steps):
        assert a.usage is b.usage
        assert b.estimate_bps == pytest.approx(a.estimate_bps, rel=1e-6)
        assert (a.acked_bps is None) == (b.acked_bps is None)
        if a.acked_bps is not None:
            assert b.acked_bps == pytest.approx(a.acked_bps, rel=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_arrival_jitter_on_an_uncongested_link_is_not_overuse(seed):
    link = Link(10_000_000, queue_limit_s=0.3, jitter_s=0.005, seed=seed)
    steps = link.run(30.0, following(5_000_000))
    assert all(s.usage is not Usage.OVERUSING for s in steps)
    assert all(b.estimate_bps >= a.estimate_bps for a, b in zip(steps, steps[1:]))  # never cut
    assert steps[-1].estimate_bps > 2_000_000  # and it kept climbing


def test_set_estimate_jumps_up_and_never_down():
    est = DelayBasedEstimate(start_bps=300_000, max_bps=5_000_000)
    est.set_estimate(1_500_000, now=1.0)
    assert est.estimate_bps == 1_500_000
    est.set_estimate(800_000, now=2.0)
    assert est.estimate_bps == 1_500_000
    est.set_estimate(9_000_000, now=3.0)
    assert est.estimate_bps == 5_000_000  # capped at max


def test_a_probe_estimate_stands_until_a_queue_says_otherwise():
    link = Link(2_000_000, queue_limit_s=0.3)
    link.run(2.0, following(5_000_000))
    link.estimator.set_estimate(1_800_000, link.now)
    steps = link.run(5.0, following(5_000_000))
    assert all(s.estimate_bps >= 1_800_000 for s in steps[:20])  # the link carries it: no queue, no cut
    assert all(s.usage is not Usage.OVERUSING for s in steps[:20])


@pytest.mark.parametrize("capacity,send", [
    (10_000_000, 1_500_000),  # all of it
    (1_000_000, 2_000_000),  # the bottleneck's rate, not the sender's
])
def test_acknowledged_bps_is_the_delivered_rate(capacity, send):
    link = Link(capacity, queue_limit_s=0.3)
    steps = link.run(10.0, constant(send))
    assert steps[0].acked_bps is None  # not half a second of arrivals yet
    for s in steps:
        if s.now > 2.0:
            assert s.acked_bps is not None
            assert s.acked_bps == pytest.approx(s.delivered_bps, rel=0.1)


def test_acknowledged_bps_under_random_loss_is_what_survived():
    link = Link(10_000_000, queue_limit_s=0.3, loss=0.3, seed=3)
    steps = [s for s in link.run(20.0, constant(1_000_000)) if s.now > 2.0]
    acked = [s.acked_bps for s in steps if s.acked_bps is not None]
    assert len(acked) == len(steps)
    # ~36 packets in a half-second window: a few more or fewer at its edges is 10 %, so
    # per step the margin is wider; on average it is the rate that got through
    assert statistics.mean(acked) == pytest.approx(statistics.mean(s.delivered_bps for s in steps), rel=0.03)
    assert statistics.mean(acked) == pytest.approx(700_000, rel=0.1)
    for s in steps:
        assert s.acked_bps == pytest.approx(s.delivered_bps, rel=0.25)


def test_acknowledged_bps_falls_when_nothing_arrives():
    link = Link(10_000_000, queue_limit_s=0.3)
    link.run(3.0, constant(1_000_000))
    before = link.estimator.estimate_bps
    link.loss = 1.0  # a blackout: the receiver has nothing to report
    steps = link.run(1.5, constant(1_000_000))
    assert steps[-1].acked_bps is not None and steps[-1].acked_bps < 100_000
    assert steps[-1].estimate_bps >= before  # no delay signal, no cut: the caller weighs the silence
    link.loss = 0.0
    steps = link.run(1.0, constant(1_000_000))
    assert steps[-1].loss_ratio > 0.2  # the gap is reported lost once packets arrive again
    assert steps[-1].acked_bps == pytest.approx(1_000_000, rel=0.1)


def test_the_estimate_does_not_run_away_from_what_the_link_has_shown():
    # an application-limited sender: 300 kbit/s on a 10 Mbit/s link for a minute
    link = Link(10_000_000, queue_limit_s=0.3, estimator=DelayBasedEstimate(start_bps=300_000))
    steps = link.run(60.0, constant(300_000))
    for a, b in zip(steps, steps[1:]):
        if b.estimate_bps > a.estimate_bps:
            assert b.acked_bps is not None and b.estimate_bps <= 1.5 * b.acked_bps + 10_000 + 1e-6
    assert max(s.estimate_bps for s in steps) < 1.6 * 300_000 + 10_000  # a noisy reading may lift the bound a little
    assert steps[-1].estimate_bps > 400_000  # but it does grow to that bound


def test_a_receiver_clock_jump_resets_without_a_false_overuse():
    link = Link(10_000_000, queue_limit_s=0.3, estimator=DelayBasedEstimate(start_bps=1_000_000))
    link.run(5.0, constant(1_000_000))
    before = link.estimator.estimate_bps
    link.clock_offset_s = 3600.0  # the receiver's clock restarted an hour ahead
    steps = link.run(5.0, constant(1_000_000))
    assert all(s.usage is not Usage.OVERUSING for s in steps)
    assert all(s.estimate_bps >= before for s in steps)
    assert steps[-1].acked_bps == pytest.approx(1_000_000, rel=0.1)


def test_packets_out_of_send_order_are_skipped_not_counted_as_delay():
    est = DelayBasedEstimate()
    now = 0.0
    for k in range(50):  # 10 ms spacing, 30 ms one-way
        batch = [PacketResult(k * 0.1 + j * 0.01, 100.0 + k * 0.1 + j * 0.01 + 0.03, 1200) for j in range(10)]
        if k % 5 == 4:
            batch[3], batch[6] = batch[6], batch[3]  # a caller's slip: two swapped
        now = k * 0.1 + 0.15
        est.update(batch, now)
        assert est.usage is not Usage.OVERUSING
    assert est.loss_ratio == 0.0
