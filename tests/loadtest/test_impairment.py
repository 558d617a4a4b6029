"""The load test's impairment stages, deterministically: fixed seeds, time given, not read."""

from __future__ import annotations

import asyncio
import json
import random
import statistics

import pytest

from loadtest.impaired_transport import TimedDelivery
from loadtest.impairment import (
    PROFILES,
    WIRE_OVERHEAD,
    BernoulliLoss,
    DelayJitter,
    GilbertElliott,
    Link,
    LinkSpec,
    Profile,
    TokenBucketQueue,
    derive_seed,
    parse_profiles,
)


def burst_lengths(losses: list[bool]) -> list[int]:
    bursts, run = [], 0
    for lost in losses:
        if lost:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    if run:
        bursts.append(run)
    return bursts


def test_random_loss_rate_matches_for_a_seed_and_repeats_exactly():
    model = BernoulliLoss(0.30, random.Random(7))
    losses = [model.lost() for _ in range(20_000)]
    assert abs(sum(losses) / len(losses) - 0.30) < 0.01
    again = BernoulliLoss(0.30, random.Random(7))
    assert [again.lost() for _ in range(20_000)] == losses
    # independent losses: bursts are short (mean 1 / (1 - p) ~ 1.43 packets)
    assert statistics.mean(burst_lengths(losses)) == pytest.approx(1 / 0.7, rel=0.05)


def test_gilbert_elliott_gives_the_loss_rate_in_bursts_of_the_mean_length():
    model = GilbertElliott(loss=0.10, mean_burst=3.0, rng=random.Random(11))
    losses = [model.lost() for _ in range(200_000)]
    assert abs(sum(losses) / len(losses) - 0.10) < 0.01
    bursts = burst_lengths(losses)
    assert statistics.mean(bursts) == pytest.approx(3.0, rel=0.05)
    # geometric burst lengths: P(length = 1) = 1 / mean_burst
    assert bursts.count(1) / len(bursts) == pytest.approx(1 / 3, rel=0.05)
    assert max(bursts) >= 10  # bursty, unlike independent loss at the same rate


def test_delay_and_jitter_stay_in_bounds_and_keep_order():
    stage = DelayJitter(0.050, 0.030, random.Random(3))
    sends = [i * 0.001 for i in range(5000)]  # a packet every millisecond
    exits = [stage.exit_time(t) for t in sends]
    delays = [e - t for e, t in zip(exits, sends)]
    assert min(delays) >= 0.050 - 0.030 - 1e-9
    assert max(delays) <= 0.050 + 0.030 + 1e-9
    assert exits == sorted(exits)  # FIFO: no packet overtakes another


def test_jitter_with_reordering_spreads_delays_uniformly():
    stage = DelayJitter(0.050, 0.030, random.Random(3), reorder=True)
    delays = [stage.exit_time(t) - t for t in (i * 0.02 for i in range(10_000))]
    assert min(delays) >= 0.020 - 1e-9 and max(delays) <= 0.080 + 1e-9
    assert statistics.mean(delays) == pytest.approx(0.050, abs=0.001)
    assert statistics.pstdev(delays) == pytest.approx(0.060 / 12 ** 0.5, rel=0.05)  # uniform on [-30, +30] ms


def test_rate_cap_holds_throughput_and_the_queue_stays_bounded():
    rate_bps, queue_bytes = 800_000, 50_000
    bucket = TokenBucketQueue(rate_bps, queue_bytes=queue_bytes, burst_bytes=3000)
    size = 1200
    offered_bps = 1_600_000  # twice the cap
    interval = size * 8 / offered_bps
    departures, waits, drops, max_queue = [], [], 0, 0
    for i in range(20_000):
        now = i * interval
        out = bucket.admit(now, size)
        max_queue = max(max_queue, bucket.queued_bytes(now))
        if out is None:
            drops += 1
        else:
            assert out >= now
            departures.append(out)
            waits.append(out - now)
    assert departures == sorted(departures)
    span = departures[-1] - departures[0]
    throughput = (len(departures) - 1) * size * 8 / span
    assert throughput == pytest.approx(rate_bps, rel=0.01)
    assert max_queue <= queue_bytes
    assert drops / 20_000 == pytest.approx(0.5, abs=0.02)  # drop-tail sheds the excess
    # a full queue means at most queue_bytes / rate of waiting
    assert max(waits) <= queue_bytes * 8 / rate_bps + 0.01


def test_rate_cap_passes_traffic_under_the_rate_without_delay():
    bucket = TokenBucketQueue(800_000, queue_bytes=50_000, burst_bytes=3000)
    size, interval = 1000, 0.02  # 400 kbit/s
    for i in range(1000):
        assert bucket.admit(i * interval, size) == pytest.approx(i * interval)
    assert bucket.dropped == 0


def test_a_link_chains_loss_queue_and_delay_and_counts():
    spec = LinkSpec(loss=0.2, delay_ms=40, jitter_ms=10, rate_kbps=400, queue_ms=100)
    link = Link(spec, seed=derive_seed(1, "loss-30", 0, "patient", "up"))
    results = [link.admit(i * 0.005, 500 + WIRE_OVERHEAD) for i in range(4000)]  # ~864 kbit/s offered
    c = link.counters
    assert c.packets == 4000 and c.lost + c.dropped + c.delivered == 4000
    assert c.lost / 4000 == pytest.approx(0.2, abs=0.02)
    assert c.dropped > 0  # 80 % of 864 kbit/s still exceeds 400 kbit/s
    delivered = [(i * 0.005, t) for i, t in enumerate(results) if t is not None]
    assert all(t - sent >= 0.030 - 1e-9 for sent, t in delivered)
    # the same seed makes the same decisions
    again = Link(spec, seed=derive_seed(1, "loss-30", 0, "patient", "up"))
    assert [again.admit(i * 0.005, 500 + WIRE_OVERHEAD) for i in range(4000)] == results


def test_seeds_differ_per_peer_and_direction():
    up = Link(LinkSpec(loss=0.3), derive_seed(1, "loss-30", 0, "patient", "up"))
    down = Link(LinkSpec(loss=0.3), derive_seed(1, "loss-30", 0, "patient", "down"))
    assert [up.admit(0, 100) for _ in range(200)] != [down.admit(0, 100) for _ in range(200)]


def test_named_profiles():
    assert list(PROFILES)[:5] == ["clean", "4g", "bad-wifi", "loss-30", "narrow"]
    assert PROFILES["clean"].uplink.is_clean and PROFILES["clean"].downlink.is_clean
    g4 = PROFILES["4g"]
    assert g4.uplink == g4.downlink
    assert (g4.uplink.loss, g4.uplink.delay_ms * 2, g4.uplink.jitter_ms) == (0.02, 60, 20)
    wifi = PROFILES["bad-wifi"].downlink
    assert (wifi.burst_loss, wifi.delay_ms * 2, wifi.jitter_ms) == (0.10, 100, 30)
    loss30 = PROFILES["loss-30"].uplink
    assert (loss30.loss, loss30.delay_ms * 2, loss30.jitter_ms) == (0.30, 100, 0)
    narrow = PROFILES["narrow"]
    assert narrow.links_for("patient")[0].rate_kbps == 800
    assert narrow.links_for("patient")[1].is_clean
    assert all(link.is_clean for role in ("doctor", "expert") for link in narrow.links_for(role))
    assert Profile.from_json(narrow.to_json()) == narrow


def test_profile_arguments_accept_repeats_and_comma_lists():
    assert [p.name for p in parse_profiles(["clean,4g", "loss-30", "4g"])] == ["clean", "4g", "loss-30"]
    with pytest.raises(ValueError, match="unknown profile"):
        parse_profiles(["lte"])


def test_link_specs_reject_impossible_settings():
    with pytest.raises(ValueError):
        LinkSpec(loss=0.1, burst_loss=0.1)
    with pytest.raises(ValueError):
        LinkSpec(delay_ms=10, jitter_ms=20)  # a packet would leave before it was sent
    with pytest.raises(ValueError):
        LinkSpec(loss=1.0)


async def test_timed_delivery_runs_jobs_in_time_order_then_submission_order():
    loop = asyncio.get_running_loop()
    delivery = TimedDelivery(loop)
    done: list[tuple[str, float]] = []
    start = loop.time()

    def job(name: str):
        async def run() -> None:
            done.append((name, loop.time() - start))
        return run

    delivery.schedule(start + 0.06, job("c"))
    delivery.schedule(start + 0.02, job("a"))
    delivery.schedule(start + 0.06, job("d"))
    delivery.schedule(start + 0.04, job("b"))
    await asyncio.sleep(0.12)
    assert [name for name, _ in done] == ["a", "b", "c", "d"]
    assert all(t >= due - 0.002 for (_, t), due in zip(done, (0.02, 0.04, 0.06, 0.06)))
    delivery.close()


class FakeIce:
    """The ICE transport's datagram source the downlink impairment reads from."""

    def __init__(self) -> None:
        self.datagrams: asyncio.Queue = asyncio.Queue()

    async def _recv(self) -> bytes:
        return await self.datagrams.get()


class FakeTransport:
    """What impaired_transport wraps: the uplink send and the ICE datagrams below SRTP."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sent: list[tuple[bytes, float]] = []
        self.transport = FakeIce()

    async def _send_rtp(self, data: bytes) -> None:
        self.sent.append((data, self.loop.time()))


async def test_impair_wraps_both_directions_of_a_transport():
    from loadtest.impaired_transport import impair

    loop = asyncio.get_running_loop()
    transport = FakeTransport(loop)
    up = Link(LinkSpec(loss=0.5), seed=1)
    down = Link(LinkSpec(delay_ms=30), seed=2)
    handle = impair(transport, up, down)
    assert impair(transport, up, down) is handle  # installed once
    received: list[tuple[bytes, float]] = []

    async def reader() -> None:  # the DTLS transport's read loop
        while True:
            received.append((await transport.transport._recv(), loop.time()))

    task = asyncio.ensure_future(reader())
    start = loop.time()
    for i in range(200):
        await transport._send_rtp(bytes([0x80, i]))
    datagrams = [bytes([0x80, i]) for i in range(5)] + [b"\x81\xc9rtcp", b"\x80\x00"]  # the last: a duplicate
    dtls = b"\x16\xfe\xfd"
    for d in datagrams + [dtls]:
        transport.transport.datagrams.put_nowait(d)
    await asyncio.sleep(0.005)
    assert received and received[0][0] == dtls  # DTLS is not impaired; SRTP is still on the wire
    await asyncio.sleep(0.06)
    assert 70 < len(transport.sent) < 130  # half lost, the rest at once
    # below SRTP each datagram is delivered on its own, duplicates included (SRTP drops them later)
    assert [d for d, _ in received[1:]] == datagrams
    assert all(t - start >= 0.029 for _, t in received[1:])
    assert handle.counters()["uplink"]["packets"] == 200 and handle.counters()["downlink"]["delivered"] == 7
    task.cancel()
    handle.close()


async def test_clean_links_leave_the_transport_alone():
    from loadtest.impaired_transport import impair

    transport = FakeTransport(asyncio.get_running_loop())
    original = transport._send_rtp
    assert impair(transport, Link(LinkSpec(), 1), Link(LinkSpec(), 2)) is None
    assert transport._send_rtp == original


def test_one_leg_loss_profiles_are_known_but_not_in_the_default_run():
    from loadtest.impairment import PROFILES

    up, down = parse_profiles(["loss-30-uplink,loss-30-downlink"])
    assert (up.uplink.loss, up.downlink.loss, down.uplink.loss, down.downlink.loss) == (0.3, 0.0, 0.0, 0.3)
    assert all(link.delay_ms == 50 for p in (up, down) for link in (p.uplink, p.downlink))  # loss-30's RTT
    assert "loss-30-uplink" not in PROFILES  # `--profile` left out runs the five of the issue only


def test_a_stepped_cap_narrows_and_opens_the_link_mid_call():
    """Uncapped, then 500 kbit/s from 10 s to 30 s after the first packet (sent at 5 s), then
    uncapped again, under a steady 1 Mbit/s: the middle stretch carries the cap and queues, the
    ends pass at once."""
    spec = LinkSpec(queue_ms=300, rate_steps=((10.0, 500.0), (30.0, None)))
    link = Link(spec, seed=1)
    size, interval = 1250, 0.01  # 1 Mbit/s offered, from t = 5 s on
    out = [(5.0 + i * interval, link.admit(5.0 + i * interval, size)) for i in range(4000)]

    def delivered_bps(start: float, end: float) -> float:
        sent = [t for s, t in out if start <= s < end and t is not None]
        return len(sent) * size * 8 / (end - start)

    assert all(t == sent for sent, t in out if sent < 15.0)  # before the step: no cap, no wait
    assert delivered_bps(18.0, 34.0) == pytest.approx(500_000, rel=0.05)
    waits = [t - s for s, t in out if 20.0 <= s < 34.0 and t is not None]
    assert 0.25 < max(waits) <= 0.3 + 0.01  # the 300 ms queue fills and holds
    assert link.counters.dropped > 0
    # after the cap lifts (35 s) the queue drains in order, then packets pass at once again
    assert all(t == s for s, t in out if s >= 35.5)
    # each step is on record as it took effect, on the clock packets were admitted on
    assert link.counters.as_dict()["steps"] == [[15.0, 500.0], [35.0, None]]
    assert link.counters.as_dict()["initial_kbps"] is None
    assert not any(t is None for s, t in out if s >= 35.0)
    departures = [t for _, t in out if t is not None]
    assert departures == sorted(departures)


def test_rate_steps_survive_json_and_are_checked():
    profile = parse_profiles(["patient-downlink-step"])[0]
    again = Profile.from_json(json.loads(json.dumps(profile.to_json())))
    assert again == profile
    assert profile.links_for("patient")[1].rate_steps == ((10.0, 500.0), (30.0, None))
    assert "at 10 s 500 kbit/s cap" in profile.links_for("patient")[1].describe()
    with pytest.raises(ValueError, match="time order"):
        LinkSpec(rate_steps=((20.0, 500.0), (10.0, None)))
    with pytest.raises(ValueError, match="positive"):
        LinkSpec(rate_steps=((1.0, 0.0),))


def test_downlink_profiles_cap_only_the_patients_downlink_and_are_not_in_the_default_run():
    for name in ("patient-downlink-1m", "patient-downlink-step", "patient-cellular"):
        (profile,) = parse_profiles([name])
        assert name not in PROFILES
        up, down = profile.links_for("patient")
        assert down.rate_kbps or down.rate_steps
        for role in ("doctor", "expert"):
            assert all(link.is_clean for link in profile.links_for(role))
    one_mbit = parse_profiles(["patient-downlink-1m"])[0].links_for("patient")
    assert one_mbit == (LinkSpec(delay_ms=30), LinkSpec(delay_ms=30, rate_kbps=1000, queue_ms=300))
