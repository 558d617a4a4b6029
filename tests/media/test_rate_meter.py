"""RateMeter: bits per second over a ring of short buckets (explicit times: no waiting)."""

from __future__ import annotations

import pytest

from media.rate_meter import BUCKET_S, BUCKETS, RateMeter

WINDOW_S = BUCKET_S * BUCKETS


def feed(meter: RateMeter, bps: float, start: float, end: float, interval: float = 0.01) -> float:
    """Packets at a steady `bps` from `start` up to (not including) `end`; returns the time after the last."""
    nbytes = bps / 8 * interval
    k = 0
    while start + k * interval < end - 1e-9:
        meter.add(round(nbytes), start + k * interval)
        k += 1
    return start + k * interval


def test_an_empty_meter_reads_zero():
    meter = RateMeter()
    assert meter.bps(0.0) == 0
    assert meter.bps(123.456) == 0


@pytest.mark.parametrize("bps", [16_000, 300_000, 2_500_000])
@pytest.mark.parametrize("phase", [0.0, 0.033, 0.05, 0.071, 0.099])
def test_a_steady_rate_reads_true_whatever_the_phase_within_a_bucket(bps, phase):
    meter = RateMeter()
    end = feed(meter, bps, 50.0, 53.0 + phase)
    assert meter.bps(end) == pytest.approx(bps, rel=0.03)


def test_a_young_meter_rates_over_its_life_not_the_whole_window():
    meter = RateMeter()
    end = feed(meter, 400_000, 20.0, 20.3)  # 0.3 s of a one-second window
    assert meter.bps(end) == pytest.approx(400_000, rel=0.05)  # not diluted to 120 kbit/s


def test_a_single_packet_reads_over_at_least_one_bucket():
    meter = RateMeter()
    meter.add(1000, 7.0)
    rate = meter.bps(7.0)  # no time has passed: the rate must not blow up
    assert rate == pytest.approx(1000 * 8 / BUCKET_S)


def test_a_meter_that_stops_decays_to_zero_after_its_window():
    meter = RateMeter()
    end = feed(meter, 800_000, 10.0, 12.0)
    assert meter.bps(end) == pytest.approx(800_000, rel=0.03)
    half = meter.bps(end + WINDOW_S / 2)
    assert 0.3 * 800_000 < half < 0.7 * 800_000  # about half of the window still holds packets
    assert meter.bps(end + WINDOW_S + BUCKET_S) == 0


def test_after_a_long_silence_only_new_packets_count():
    meter = RateMeter()
    feed(meter, 2_000_000, 10.0, 11.0)
    end = feed(meter, 100_000, 500.0, 501.5)  # far more than a whole ring later
    assert meter.bps(end) == pytest.approx(100_000, rel=0.05)


def test_a_silence_shorter_than_the_window_clears_only_the_buckets_it_spans():
    meter = RateMeter()
    feed(meter, 1_000_000, 10.0, 12.0)
    end = feed(meter, 1_000_000, 12.0 + WINDOW_S / 2, 13.0 + WINDOW_S / 2)
    assert meter.bps(end) == pytest.approx(1_000_000, rel=0.03)  # the gap has left the window again
    # midway: half the window was silence
    meter2 = RateMeter()
    feed(meter2, 1_000_000, 10.0, 12.0)
    end2 = feed(meter2, 1_000_000, 12.0 + WINDOW_S / 2, 12.0 + WINDOW_S)
    assert 0.4 * 1_000_000 < meter2.bps(end2) < 0.65 * 1_000_000


def test_a_late_packet_within_the_window_counts_and_an_older_one_does_not():
    meter = RateMeter()
    meter.add(1000, 30.0)
    meter.add(1000, 30.5)
    meter.add(1000, 30.2)  # late, but inside the window
    inside = meter.bps(30.5)
    meter.add(50_000, 30.5 - WINDOW_S - BUCKET_S)  # older than the window: must not land in a live bucket
    assert meter.bps(30.5) == pytest.approx(inside)
    assert inside == pytest.approx(3000 * 8 / 0.5)



def test_reading_does_not_change_the_rate():
    meter = RateMeter()
    end = feed(meter, 500_000, 3.0, 4.5)
    first = meter.bps(end)
    assert [meter.bps(end) for _ in range(5)] == [first] * 5


def test_custom_buckets_set_the_window():
    meter = RateMeter(bucket_s=0.25, buckets=8)  # a two-second window
    end = feed(meter, 200_000, 40.0, 43.0)
    assert meter.bps(end) == pytest.approx(200_000, rel=0.03)
    assert meter.bps(end + 1.0) == pytest.approx(100_000, rel=0.15)  # a one-second window would read 0
    assert meter.bps(end + 2.0 + 0.25) == 0
