"""The publisher's REMB: a probe burst that got through starts it at the burst's rate at
once; arrival delays take it from there."""

from __future__ import annotations

from media.uplink_estimate import UplinkEstimator

from .test_uplink_probes import abs_send_time


def steady(estimator: UplinkEstimator, *, from_ms: float, to_ms: float, kbps: float = 300,
           size: int = 1000) -> list[tuple[float, int]]:
    """A clean link: packets arrive 20 ms after they are sent, evenly spaced."""
    out, now = [], from_ms
    while now < to_ms:
        estimate = estimator.add(arrival_time_ms=int(now + 20), abs_send_time=abs_send_time(now),
                                 payload_size=size, ssrc=1)
        if estimate is not None:
            out.append((now, estimate))
        now += size * 8 / kbps
    return out


def test_without_a_burst_the_first_estimate_waits_seconds_and_starts_from_what_arrives():
    estimator = UplinkEstimator()
    estimates = steady(estimator, from_ms=0, to_ms=6000)
    assert estimates and estimates[0][0] > 2900
    assert max(e for _, e in estimates) < 600_000
    assert estimator.probed_bps == 0


def test_a_burst_that_got_through_is_the_estimate_at_once_and_stays_the_floor_on_a_clean_link():
    estimator = UplinkEstimator()
    steady(estimator, from_ms=0, to_ms=100)
    burst = [estimator.add(arrival_time_ms=int(100 + i * 1.2 + 20), abs_send_time=abs_send_time(100 + i * 1.2),
                           payload_size=270, ssrc=2) for i in range(14)]  # 1.8 Mbit/s
    assert not any(burst)
    later = steady(estimator, from_ms=130, to_ms=5000)
    first_at, first = later[0]
    assert first_at < 200 and abs(first - 1_800_000) < 1_800_000 * 0.1
    assert estimator.probed_bps == first
    assert all(e >= first for _, e in later)  # no overuse on a clean link: it only grows
