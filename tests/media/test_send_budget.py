"""SendBudget: one subscriber's meters, when its downlink counts as narrow, the pacing rate and
whether recovery traffic may go (explicit times)."""

from __future__ import annotations

import asyncio

import pytest

from media.downlink_estimate import CONGESTED_QUEUE_S, DELIVERED_WINDOW_S, SENT_CAP_FACTOR
from media.pacer import VIDEO, Pacer
from media.send_budget import (
    CONGESTED_TARGET_SHARE,
    NARROW_MEMORY_S,
    PACER_CONGESTED_S,
    PACKET_OVERHEAD_BYTES,
    SendBudget,
)

BASE = 0.05
QUEUED = BASE + 3 * CONGESTED_QUEUE_S  # a sample with a queue well over the mark
STEP = 0.02


def send(budget: SendBudget, start: float, end: float, video_bps: float = 0.0, audio_bps: float = 0.0,
         delivered_bps: float = 0.0) -> None:
    """Media (and, if asked, delivery reports) at steady rates, one packet per class per STEP;
    rates count the wire overhead, as the meters do."""
    k = 0
    while start + k * STEP < end - 1e-9:
        now = start + k * STEP
        if video_bps:
            budget.note_media(round(video_bps / 8 * STEP) - PACKET_OVERHEAD_BYTES, now, audio=False)
        if audio_bps:
            budget.note_media(round(audio_bps / 8 * STEP) - PACKET_OVERHEAD_BYTES, now, audio=True)
        if delivered_bps:
            budget.estimate.note_delivered(round(delivered_bps / 8 * STEP), now)
        k += 1


def rtt_samples(budget: SendBudget, rtt: float, times: list[float]) -> None:
    for t in times:
        budget.estimate.note_rtt(rtt, t)


def congest(budget: SendBudget, now: float) -> None:
    """Path RTT seen, then a queue: congested at `now`."""
    rtt_samples(budget, BASE, [now - 2.0, now - 1.5, now - 1.0])
    rtt_samples(budget, QUEUED, [now - 0.5, now])
    assert budget.estimate.congested


def clear(budget: SendBudget, now: float) -> None:
    rtt_samples(budget, BASE, [now - 0.5, now])
    assert not budget.estimate.congested


def test_a_fresh_budget_limits_nothing():
    budget = SendBudget()
    budget.update(1.0)
    assert not budget.narrow and not budget.congested
    assert budget.pacer.rate_bps is None
    assert budget.estimate_bps(1.0) is None
    assert budget.allow_recovery(1000, 1.0)


def test_meters_count_the_wire_overhead_and_sent_adds_every_class():
    budget = SendBudget()
    for k in range(50):  # 0.5 s, one packet of each kind per 10 ms
        now = 10.0 + k * 0.01
        budget.note_media(100, now, audio=True)
        budget.note_media(1000, now, audio=False)
        budget.note_padding(200, now)
        assert budget.allow_recovery(300, now)
    now = 10.5
    per_s = 100  # packets
    assert budget.audio.bps(now) == pytest.approx((100 + PACKET_OVERHEAD_BYTES) * 8 * per_s, rel=0.03)
    assert budget.video.bps(now) == pytest.approx((1000 + PACKET_OVERHEAD_BYTES) * 8 * per_s, rel=0.03)
    assert budget.media_bps(now) == pytest.approx(budget.audio.bps(now) + budget.video.bps(now))
    assert budget.recovery.bps(now) == pytest.approx((300 + PACKET_OVERHEAD_BYTES) * 8 * per_s, rel=0.03)
    assert budget.sent_bps(now) == pytest.approx(
        budget.media_bps(now) + budget.recovery.bps(now) + budget.padding.bps(now))
    assert budget.padding.bps(now) > 0


def test_the_estimate_comes_from_the_receivers_while_the_link_is_not_narrow():
    budget = SendBudget()
    send(budget, 0.0, 2.0, video_bps=500_000, audio_bps=40_000)
    budget.estimate.note_remb(3_000_000, frozenset({1}), 2.0)
    budget.update(2.0)
    assert budget.estimate_bps(2.0) == pytest.approx(SENT_CAP_FACTOR * budget.sent_bps(2.0))
    budget.estimate.note_remb(600_000, frozenset({1}), 2.0)
    assert budget.estimate_bps(2.0) == 600_000
    assert budget.pacer.rate_bps is None


def test_congestion_makes_the_link_narrow_and_paces_below_what_was_sent():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=800_000, audio_bps=40_000)
    budget.estimate.note_remb(2_000_000, frozenset({1}), 2.5)  # more than is sent
    congest(budget, 3.0)
    budget.update(3.0)
    assert budget.narrow and budget.congested
    sent = budget.sent_bps(3.0)
    assert budget.pacer.rate_bps == pytest.approx(CONGESTED_TARGET_SHARE * sent)


def test_under_congestion_a_low_estimate_sets_the_pace():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=800_000, audio_bps=40_000)
    budget.estimate.note_remb(500_000, frozenset({1}), 2.5)  # less than is sent
    congest(budget, 3.0)
    budget.update(3.0)
    assert budget.pacer.rate_bps == pytest.approx(CONGESTED_TARGET_SHARE * 500_000)


def test_under_congestion_the_delivered_rate_becomes_the_capacity_and_the_estimate():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=1_000_000, audio_bps=40_000, delivered_bps=600_000)
    budget.estimate.note_remb(2_000_000, frozenset({1}), 2.5)
    assert 3.0 >= DELIVERED_WINDOW_S  # reports long enough to stand for the link
    congest(budget, 3.0)
    budget.update(3.0)
    capacity = budget.estimate.capacity
    assert capacity == pytest.approx(600_000, rel=0.05)
    assert budget.pacer.rate_bps == pytest.approx(CONGESTED_TARGET_SHARE * capacity)
    assert budget.estimate_bps(3.0) == capacity  # narrow: the capacity, not the receivers' 2 Mbit/s
    summary = budget.summary(3.0)
    assert summary["capacity_kbps"] == round(capacity / 1000)
    assert summary["estimate_kbps"] == round(capacity / 1000)
    assert summary["congested"] is True
    assert summary["pacing_kbps"] == round(budget.pacer.rate_bps / 1000)


def test_with_the_videos_paused_what_arrives_no_longer_stands_for_the_link():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=1_000_000, audio_bps=40_000, delivered_bps=600_000)
    congest(budget, 3.0)
    budget.update(3.0)
    assert budget.estimate.capacity == pytest.approx(600_000, rel=0.05)
    # the videos paused; the queue still drains, and audio alone is reported now and then
    send(budget, 3.0, 9.0, audio_bps=40_000, delivered_bps=5_000)
    congest(budget, 9.0)
    budget.update(9.0)
    assert budget.estimate.capacity == pytest.approx(600_000, rel=0.05)


def test_without_any_estimate_congestion_does_not_pace():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=800_000)
    congest(budget, 3.0)
    budget.update(3.0)
    assert budget.congested
    assert budget.pacer.rate_bps is None  # no rate known to pace at


def test_the_link_stays_narrow_for_a_while_after_the_queue_drained():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=1_000_000, delivered_bps=700_000)
    budget.estimate.note_remb(2_000_000, frozenset({1}), 2.5)
    congest(budget, 3.0)
    budget.update(3.0)
    capacity = budget.estimate.capacity
    assert capacity is not None
    clear(budget, 4.0)
    budget.update(4.0)
    assert budget.narrow and not budget.congested
    assert budget.pacer.rate_bps == pytest.approx(capacity)  # the whole capacity once the queue is gone
    budget.update(3.0 + NARROW_MEMORY_S - 0.01)
    assert budget.narrow
    budget.update(3.0 + NARROW_MEMORY_S)
    assert not budget.narrow
    assert budget.pacer.rate_bps is None
    assert budget.estimate.capacity is None  # forgotten with the narrowness


def test_each_congested_update_extends_the_narrow_memory():
    budget = SendBudget()
    send(budget, 0.0, 3.0, video_bps=1_000_000)
    budget.estimate.note_remb(2_000_000, frozenset({1}), 2.5)
    congest(budget, 3.0)
    budget.update(3.0)
    budget.update(13.0)  # still congested (no new sample): remembered from here
    clear(budget, 14.0)
    budget.update(3.0 + NARROW_MEMORY_S + 1.0)
    assert budget.narrow
    budget.update(13.0 + NARROW_MEMORY_S)
    assert not budget.narrow


def test_narrow_without_capacity_paces_at_the_receivers_estimate():
    budget = SendBudget()
    send(budget, 0.0, 4.0, video_bps=1_000_000)
    budget.estimate.note_remb(700_000, frozenset({1}), 2.5)
    congest(budget, 3.0)
    budget.update(3.0)
    assert budget.estimate.capacity is None  # no delivery reports
    clear(budget, 4.0)
    budget.update(4.0)
    assert budget.pacer.rate_bps == 700_000
    # the receivers' figure counts only up to a multiple of what is sent
    send(budget, 4.0, 6.0, video_bps=200_000)
    budget.update(6.0)
    assert budget.pacer.rate_bps == pytest.approx(SENT_CAP_FACTOR * budget.sent_bps(6.0))


def test_allow_recovery_refuses_under_congestion_and_counts():
    budget = SendBudget()
    congest(budget, 3.0)
    assert not budget.allow_recovery(500, 3.0)
    assert not budget.allow_recovery(500, 3.0)
    assert budget.recovery_refused == 2
    assert budget.recovery.bps(3.0) == 0  # refused bytes are not counted as sent
    clear(budget, 4.0)
    assert budget.allow_recovery(500, 4.0)
    assert budget.recovery_refused == 2
    assert budget.summary(4.0)["recovery_refused"] == 2


async def test_on_a_narrow_link_recovery_waits_for_the_pacer_backlog():
    loop = asyncio.get_running_loop()
    budget = SendBudget(pacer=Pacer())
    now = loop.time()
    send(budget, now - 3.0, now, video_bps=1_000_000)
    budget.estimate.note_remb(700_000, frozenset({1}), now)
    congest(budget, now - 0.5)
    budget.update(now - 0.5)
    clear(budget, now)
    budget.update(now)
    assert budget.narrow and not budget.estimate.congested
    assert budget.allow_recovery(500, now)  # nothing waiting

    class Transport:
        async def _send_rtp(self, data: bytes) -> None:
            pass

    try:
        budget.pacer.enqueue(Transport(), b"x" * 1000, VIDEO, now)
        assert not budget.allow_recovery(500, now)
        assert budget.recovery_refused == 1
    finally:
        await budget.pacer.close()


async def test_a_backlog_alone_does_not_refuse_recovery_when_the_link_is_not_narrow():
    loop = asyncio.get_running_loop()
    budget = SendBudget()

    class Transport:
        async def _send_rtp(self, data: bytes) -> None:
            pass

    now = loop.time()
    budget.pacer.set_rate(8_000, now)
    while budget.pacer.admit(100, VIDEO, now):
        pass
    budget.pacer.enqueue(Transport(), b"x" * 1000, VIDEO, now)
    budget.pacer.set_rate(None, now)  # no longer narrow; the packet has not gone yet
    try:
        assert budget.pacer.backlog and not budget.narrow
        assert budget.allow_recovery(500, now)
    finally:
        await budget.pacer.close()


async def test_video_waiting_long_in_the_pacer_counts_as_congestion():
    loop = asyncio.get_running_loop()
    budget = SendBudget()

    class Transport:
        async def _send_rtp(self, data: bytes) -> None:
            pass

    now = loop.time()
    send(budget, now - 3.0, now, video_bps=1_000_000)
    budget.estimate.note_remb(700_000, frozenset({1}), now)
    congest(budget, now - 1.0)
    budget.update(now - 1.0)
    clear(budget, now)
    try:
        budget.pacer.enqueue(Transport(), b"x" * 1000, VIDEO, now - PACER_CONGESTED_S + 0.1)
        budget.update(now)
        assert not budget.congested
        budget.update(now + 0.2)  # the packet has now waited longer than PACER_CONGESTED_S
        assert budget.congested and not budget.estimate.congested
        assert budget.summary(now + 0.2)["congested"] is True
    finally:
        await budget.pacer.close()


def test_summary_reports_the_meters():
    budget = SendBudget()
    send(budget, 0.0, 2.0, video_bps=500_000, audio_bps=40_000)
    summary = budget.summary(2.0)
    assert summary["video_kbps"] == pytest.approx(500, abs=15)
    assert summary["audio_kbps"] == pytest.approx(40, abs=3)
    assert summary["estimate_kbps"] is None
    assert summary["capacity_kbps"] is None
    assert summary["congested"] is False
    assert summary["pacing_kbps"] is None
