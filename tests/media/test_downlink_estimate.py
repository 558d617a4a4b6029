"""DownlinkEstimate: receiver estimates, RTT queueing, delivered capacity and probes (explicit times)."""

from __future__ import annotations

import pytest

from media.delay_based_estimate import PacketResult
from media.downlink_estimate import (
    BASE_RTT_WINDOW_S,
    CONGESTED_QUEUE_S,
    CONGESTED_SAMPLES,
    DEFAULT_START_BPS,
    DELIVERED_WINDOW_S,
    PROBE_HOLD_S,
    REMB_DROP,
    REMB_FRESH_S,
    RTT_SMOOTHING,
    SENT_CAP_FACTOR,
    SINGLE_SAMPLE_FACTOR,
    DownlinkEstimate,
)

BASE = 0.05  # the path's own RTT in these tests
PLENTY = 1e9  # sent bit/s that caps nothing


def with_base_rtt(now: float = 10.0, samples: int = 6) -> DownlinkEstimate:
    """An estimate that has seen the path's RTT a few times, ending at `now`."""
    est = DownlinkEstimate()
    for k in range(samples):
        est.note_rtt(BASE, now - (samples - 1 - k) * 0.5)
    return est


# --- receiver estimates (REMB) ---------------------------------------------------------


def test_nothing_is_known_before_any_estimate():
    est = DownlinkEstimate()
    assert est.bitrate(0.0, PLENTY) is None
    assert est.vouched(0.0) is None
    assert est.capacity is None


def test_estimates_for_disjoint_stream_sets_add_up():
    est = DownlinkEstimate()
    est.note_remb(300_000, frozenset({1}), 1.0)
    est.note_remb(500_000, frozenset({2}), 1.1)
    assert est.bitrate(1.2, PLENTY) == 800_000


def test_an_estimate_replaces_every_one_it_overlaps():
    est = DownlinkEstimate()
    est.note_remb(300_000, frozenset({1}), 1.0)
    est.note_remb(500_000, frozenset({2}), 1.0)
    est.note_remb(700_000, frozenset({3}), 1.0)
    est.note_remb(1_000_000, frozenset({1, 2}), 2.0)  # a browser's REMB for two streams
    assert est.bitrate(2.0, PLENTY) == 1_700_000
    est.note_remb(900_000, frozenset({2, 3, 4}), 3.0)  # overlaps both remaining groups
    assert est.bitrate(3.0, PLENTY) == 900_000


def test_the_same_streams_estimate_again_replaces_rather_than_adds():
    est = DownlinkEstimate()
    est.note_remb(600_000, frozenset({1, 2}), 1.0)
    est.note_remb(650_000, frozenset({1, 2}), 2.0)
    assert est.bitrate(2.0, PLENTY) == 650_000


def test_a_stale_estimate_stops_counting_while_fresh_ones_do():
    est = DownlinkEstimate()
    est.note_remb(300_000, frozenset({1}), 1.0)
    est.note_remb(500_000, frozenset({2}), 1.0 + REMB_FRESH_S)
    assert est.bitrate(1.0 + REMB_FRESH_S, PLENTY) == 800_000  # fresh up to REMB_FRESH_S inclusive
    assert est.bitrate(1.0 + REMB_FRESH_S + 0.1, PLENTY) == 500_000


def test_without_anything_fresh_the_last_known_sum_holds():
    est = DownlinkEstimate()
    est.note_remb(300_000, frozenset({1}), 1.0)
    est.note_remb(500_000, frozenset({2}), 1.0)
    assert est.bitrate(2.0, PLENTY) == 800_000
    assert est.bitrate(1.0 + REMB_FRESH_S + 1.0, PLENTY) == 800_000
    assert est.bitrate(1000.0, PLENTY) == 800_000
    est.note_remb(200_000, frozenset({1}), 1001.0)  # a fresh one ends the holding
    assert est.bitrate(1001.0, PLENTY) == 200_000


def test_an_estimate_that_went_stale_unread_is_still_held():
    est = DownlinkEstimate()
    est.note_remb(400_000, frozenset({1}), 1.0)
    assert est.bitrate(1.0 + REMB_FRESH_S + 1.0, PLENTY) == 400_000


def test_receivers_figures_count_only_up_to_a_multiple_of_what_was_sent():
    est = DownlinkEstimate()
    est.note_remb(5_000_000, frozenset({1}), 1.0)
    assert est.bitrate(1.0, 400_000) == SENT_CAP_FACTOR * 400_000
    assert est.bitrate(1.0, 4_000_000) == 5_000_000
    assert est.bitrate(1.0, 0.0) == 0.0  # nothing sent backs nothing


def test_an_estimate_falling_counts_as_a_drop():
    est = DownlinkEstimate()
    est.note_remb(1_000_000, frozenset({1}), 1.0)
    est.note_remb(1_000_000 * REMB_DROP + 1000, frozenset({1}), 2.0)  # a wobble, not a drop
    assert est.remb_drops == 0
    est.note_remb(800_000, frozenset({1}), 3.0)
    assert est.remb_drops == 1
    est.note_remb(1_200_000, frozenset({1}), 4.0)  # rising is no drop
    assert est.remb_drops == 1


def test_a_drop_is_judged_against_each_estimate_it_replaces():
    est = DownlinkEstimate()
    est.note_remb(300_000, frozenset({1}), 1.0)
    est.note_remb(500_000, frozenset({2}), 1.0)
    est.note_remb(400_000, frozenset({1, 2}), 2.0)  # below the 500k of stream 2, above stream 1's
    assert est.remb_drops == 1
    est.note_remb(1_000_000, frozenset({3}), 3.0)  # a new, disjoint group: nothing to compare
    assert est.remb_drops == 1


def test_drops_are_ignored_in_the_quiet_period_after_a_pause():
    est = DownlinkEstimate()
    est.note_remb(1_000_000, frozenset({1}), 1.0)
    est.note_paused(2.0)
    est.note_remb(500_000, frozenset({1}), 2.0)  # it receives less: not a queue
    est.note_remb(300_000, frozenset({1}), 2.0 + REMB_FRESH_S - 0.01)
    assert est.remb_drops == 0
    est.note_remb(100_000, frozenset({1}), 2.0 + REMB_FRESH_S)  # the quiet period is over
    assert est.remb_drops == 1


# --- RTT: queueing delay and congestion ------------------------------------------------


def test_no_queueing_and_no_congestion_before_any_rtt():
    est = DownlinkEstimate()
    assert est.queueing_delay == 0.0
    assert not est.congested
    assert est.rtt_samples == 0


def test_a_steady_rtt_is_no_queue_whatever_its_size():
    est = DownlinkEstimate()
    for k in range(10):
        est.note_rtt(0.4, k * 0.5)  # a long path, but its own
    assert est.queueing_delay == pytest.approx(0.0)
    assert not est.congested
    assert est.rtt_samples == 10


def test_rtt_is_smoothed_so_one_late_report_does_not_read_as_a_queue():
    est = with_base_rtt()
    late = BASE + CONGESTED_QUEUE_S * 1.5  # over the mark, but under the single-sample limit
    est.note_rtt(late, 10.5)
    assert est.queueing_delay == pytest.approx(RTT_SMOOTHING * (late - BASE))
    assert not est.congested
    est.note_rtt(late, 11.0)  # a second one in a row: smoothed over the mark
    assert est.queueing_delay > CONGESTED_QUEUE_S
    assert not est.congested  # over it once
    est.note_rtt(late, 11.5)
    assert est.congested


def test_samples_far_over_the_mark_count_before_smoothing_but_never_one_alone():
    est = with_base_rtt()
    far = BASE + CONGESTED_QUEUE_S * SINGLE_SAMPLE_FACTOR * 1.1
    est.note_rtt(far, 10.5)
    assert not est.congested  # one report delayed by a stall somewhere
    est.note_rtt(BASE, 11.0)
    est.note_rtt(far, 11.5)
    assert not est.congested  # not in a row
    est.note_rtt(far, 12.0)
    assert est.queueing_delay < CONGESTED_QUEUE_S * SINGLE_SAMPLE_FACTOR * 1.1  # smoothing still catching up
    assert est.congested


def test_congestion_ends_as_the_rtt_comes_back_down():
    est = with_base_rtt()
    est.note_rtt(BASE + 0.3, 10.5)
    est.note_rtt(BASE + 0.3, 11.0)
    assert est.congested
    for k in range(6):
        est.note_rtt(BASE, 11.5 + 0.5 * k)
    assert not est.congested
    assert est.queueing_delay < 0.01


def test_the_path_rtt_is_the_lowest_smoothed_value_of_the_window():
    est = with_base_rtt(now=10.0)
    for k in range(1, 40):  # the path's RTT steps up for good (a route change)
        est.note_rtt(BASE + 0.2, 10.0 + k)
        if 2 <= k and 10.0 + k < 10.0 + BASE_RTT_WINDOW_S - 1:
            assert est.congested, k  # the old, lower RTT is still within the window
    assert not est.congested  # the window has forgotten the old path
    assert est.queueing_delay == pytest.approx(0.0, abs=0.001)


def test_the_base_rtt_does_not_expire_while_samples_keep_confirming_it():
    est = DownlinkEstimate()
    for k in range(100):
        est.note_rtt(BASE, k * 1.0)  # 100 s of samples at the path's RTT
    est.note_rtt(BASE + 0.3, 100.0)
    est.note_rtt(BASE + 0.3, 100.5)
    assert est.congested


def test_worst_queueing_keeps_the_worst_single_sample_until_marked():
    est = with_base_rtt()
    est.note_rtt(BASE + 0.03, 10.5)
    est.note_rtt(BASE + 0.06, 11.0)
    est.note_rtt(BASE, 11.5)
    assert est.worst_queueing == pytest.approx(0.06)
    est.mark_queueing()
    assert est.worst_queueing == 0.0
    est.note_rtt(BASE + 0.01, 12.0)
    assert est.worst_queueing == pytest.approx(0.01)


# --- capacity (delivered under a queue) and probes ---------------------------------------


def deliver(est: DownlinkEstimate, bps: float, start: float, end: float, interval: float = 0.1) -> None:
    k = 0
    while start + k * interval < end - 1e-9:
        est.note_delivered(round(bps / 8 * interval), start + k * interval)
        k += 1


def test_capacity_is_what_was_delivered_once_reports_cover_the_window():
    est = DownlinkEstimate()
    deliver(est, 600_000, 5.0, 5.0 + DELIVERED_WINDOW_S)
    est.note_congested(5.0 + DELIVERED_WINDOW_S - 0.1)  # reports too short to stand for the link
    assert est.capacity is None
    est.note_congested(5.0 + DELIVERED_WINDOW_S)
    assert est.capacity == pytest.approx(600_000, rel=0.1)


def test_capacity_follows_the_latest_queue_and_can_be_forgotten():
    est = DownlinkEstimate()
    deliver(est, 900_000, 0.0, 4.0)
    est.note_congested(4.0)
    assert est.capacity == pytest.approx(900_000, rel=0.1)
    deliver(est, 300_000, 4.0, 8.0)
    est.note_congested(8.0)
    assert est.capacity == pytest.approx(300_000, rel=0.1)
    est.forget_capacity()
    assert est.capacity is None


def test_no_capacity_without_any_delivery_report():
    est = DownlinkEstimate()
    est.note_congested(100.0)
    assert est.capacity is None


def test_a_probe_that_got_through_raises_capacity_and_vouches_for_a_while():
    est = DownlinkEstimate()
    est.note_remb(400_000, frozenset({1}), 1.0)
    assert est.bitrate(1.0, PLENTY) == 400_000
    est.note_probe_ok(1_500_000, 2.0)
    assert est.capacity == 1_500_000
    assert est.vouched(2.0 + PROBE_HOLD_S) == 1_500_000
    # the probe's rate stands above the receivers' figure and the sent cap
    assert est.bitrate(2.0 + PROBE_HOLD_S, 100_000) == 1_500_000
    assert est.vouched(2.0 + PROBE_HOLD_S + 0.01) is None
    assert est.bitrate(2.0 + PROBE_HOLD_S + 0.01, 100_000) == SENT_CAP_FACTOR * 100_000


def test_a_lower_probe_does_not_lower_the_capacity():
    est = DownlinkEstimate()
    deliver(est, 2_000_000, 0.0, 3.0)
    est.note_congested(3.0)
    measured = est.capacity
    assert measured is not None
    est.note_probe_ok(500_000, 4.0)
    assert est.capacity == measured
    assert est.vouched(4.0) == 500_000


def test_a_probe_alone_makes_an_estimate():
    est = DownlinkEstimate()
    est.note_probe_ok(700_000, 1.0)
    assert est.bitrate(1.5, 0.0) == 700_000
    assert est.bitrate(1.0 + PROBE_HOLD_S + 1.0, 0.0) is None


# --- transport-cc feedback -------------------------------------------------------------

CLOCK_OFFSET = 1000.0  # the receiver's clock against ours: a constant the path's lowest delay takes out


def feedback(est: DownlinkEstimate, now: float, one_way_s: float, packets: int = 10, size: int = 1200,
             lost: int = 0) -> None:
    """One feedback for `packets` sent over the last 100 ms, each `one_way_s` in flight; `lost` of them lost."""
    sent = [now - 0.1 - one_way_s + k * 0.1 / packets for k in range(packets)]
    est.note_transport_feedback([
        PacketResult(t, None if k < lost else t + one_way_s + CLOCK_OFFSET, size) for k, t in enumerate(sent)], now)


def with_feedback(until: float = 5.0, one_way_s: float = 0.02) -> DownlinkEstimate:
    est = DownlinkEstimate()
    now = 1.0
    while now <= until:
        feedback(est, now, one_way_s)
        now += 0.1
    return est


def test_feedback_replaces_the_receivers_estimates_and_report_rtts():
    est = DownlinkEstimate()
    est.note_remb(2_000_000, frozenset({1}), 0.5)
    assert not est.transport_cc
    feedback(est, 1.0, 0.02)
    assert est.transport_cc
    assert est.delay_based is not None and est.delay_based.estimate_bps == 2_000_000  # starts from what was known
    samples = est.rtt_samples
    est.note_rtt(5.0, 1.1)  # a report's RTT no longer counts
    est.note_remb(100_000, frozenset({1}), 1.1)  # nor a receiver's estimate, nor its falling
    assert est.rtt_samples == samples and est.remb_drops == 0
    assert est.bitrate(1.1, PLENTY) == pytest.approx(2_000_000)


def test_without_an_earlier_estimate_the_delay_based_one_starts_low():
    est = with_feedback(until=1.0)
    assert est.bitrate(1.0, PLENTY) == pytest.approx(DEFAULT_START_BPS)


def test_one_way_delay_over_the_paths_is_the_queue():
    est = with_feedback()
    assert est.queueing_delay == pytest.approx(0.0, abs=1e-6) and not est.congested
    now = 5.1
    for _ in range(CONGESTED_SAMPLES):
        feedback(est, now, 0.02 + 3 * CONGESTED_QUEUE_S)
        now += 0.1
    assert est.congested
    assert est.worst_queueing == pytest.approx(3 * CONGESTED_QUEUE_S, rel=0.01)


def test_random_loss_is_no_queue():
    est = with_feedback()
    now = 5.1
    for _ in range(30):
        feedback(est, now, 0.02, lost=3)
        now += 0.1
    assert not est.congested and est.remb_drops == 0


def test_what_arrived_is_what_was_delivered_counting_padding_and_not_the_lost():
    est = DownlinkEstimate()
    now = 1.0
    while now < 1.0 + DELIVERED_WINDOW_S + 0.05:
        feedback(est, now, 0.02, packets=10, size=1000, lost=2)  # 8 kB arrive every 100 ms
        now += 0.1
    assert est.delivered.bps(now) == pytest.approx(640_000, rel=0.15)
    est.note_delivered(10**6, now)  # a receiver report's count no longer adds
    assert est.delivered.bps(now) == pytest.approx(640_000, rel=0.15)


def test_a_growing_queue_counts_as_an_estimate_falling_and_a_probe_sets_the_estimate():
    est = with_feedback()
    est.note_probe_ok(3_000_000, 5.1)
    assert est.delay_based is not None and est.delay_based.estimate_bps >= 3_000_000
    now, delay = 5.2, 0.02
    while now < 7.0 and est.remb_drops == 0:
        delay += 0.01  # the queue grows 10 ms every 100 ms
        feedback(est, now, delay)
        now += 0.1
    assert est.remb_drops == 1


def test_with_feedback_what_arrived_lately_is_the_last_half_second():
    est = DownlinkEstimate()
    now = 1.0
    while now <= 4.0:  # 30 packets of 1200 bytes a tenth of a second: 2.9 Mbit/s
        feedback(est, now, 0.02, packets=30)
        now += 0.1
    while now <= 4.7:  # the link steps down: 5 a tenth of a second, 480 kbit/s
        feedback(est, now, 0.02, packets=5)
        now += 0.1
    assert est.delivered_now_bps(now) == pytest.approx(480_000, rel=0.15)
    assert est.delivered.bps(now) > 1_000_000  # the two-second window still remembers the wider link


def test_without_feedback_what_arrived_lately_is_the_delivered_window():
    est = DownlinkEstimate()
    for k in range(30):
        est.note_delivered(12_500, 1.0 + k * 0.1)  # 1 Mbit/s in receiver reports
    assert est.delivered_now_bps(4.0) == est.delivered.bps(4.0)


def test_feedback_says_up_to_when_it_has_judged_what_was_sent():
    est = DownlinkEstimate()
    assert est.newest_sample_sent_at is None
    est.note_transport_feedback([PacketResult(10.00, 10.03 + CLOCK_OFFSET, 1200),
                                 PacketResult(10.05, 10.08 + CLOCK_OFFSET, 1200),
                                 PacketResult(10.09, None, 1200)], 10.2)
    assert est.newest_sample_sent_at == 10.05  # the newest packet that arrived; a lost one judges nothing
    est.note_transport_feedback([PacketResult(10.02, 10.05 + CLOCK_OFFSET, 1200)], 10.3)  # a late report of older ones
    assert est.newest_sample_sent_at == 10.05
