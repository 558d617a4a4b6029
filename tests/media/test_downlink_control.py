"""DownlinkController: pausing videos on a congested downlink and bringing them back by probes.

Driven through `tick(now)` on a simulated clock: a real SendBudget whose meters and estimate
are fed by hand (media for the forwarded videos, RTT samples, receiver estimates), and fake
videos implementing ControlledVideo. No real time passes except in the padding tests.
"""

from __future__ import annotations

import asyncio
from typing import Optional

import pytest

from media.delay_based_estimate import PacketResult
from media.downlink_control import (
    CEILING_MEMORY_S,
    CLIMBS_TO_FORGET,
    FIRST_PROBE_BACKOFF_S,
    MAX_LAYER_PROBE_BACKOFF_S,
    MAX_PROBE_BACKOFF_S,
    MIN_PROBE_BASE_BPS,
    PACER_SHED_S,
    PADDING_TICK_S,
    PAST_CEILING,
    PAUSE_SPACING_S,
    PROBE_GROWTH,
    PROBE_LIMIT_S,
    PROBE_QUEUE_S,
    PROBE_RTT_SAMPLES,
    PROBE_S,
    RAMP_LEVEL_S,
    RESUME_HEADROOM,
    RESUME_TRIAL_S,
    SETTLE_AFTER_RAISE_S,
    TICK_S,
    Demand,
    DownlinkController,
    Probe,
    allocate,
)
from media.downlink_estimate import CONGESTED_QUEUE_S, REMB_DROP, REMB_FRESH_S
from media.pacer import VIDEO
from media.send_budget import NARROW_MEMORY_S, PACER_CONGESTED_S, PACKET_OVERHEAD_BYTES, SendBudget

BASE = 0.05  # the path's RTT
CLEAN = BASE
QUEUED = BASE + 3 * CONGESTED_QUEUE_S  # one such sample is congestion at once
PROBE_HURT = BASE + (PROBE_QUEUE_S + CONGESTED_QUEUE_S) / 2  # fails a probe, yet is no congestion
STEP = 0.05  # simulation step
RTT_EVERY = 10  # steps: a receiver report every 0.5 s
REMB_EVERY = 20  # steps
TICK_EVERY = round(TICK_S / STEP)


class FakeVideo:
    """A ControlledVideo: a source at a fixed rate (or simulcast `layers`, lowest first, carrying
    the top one at first); padding goes out in whole packets."""

    PADDING_PACKET = 250

    def __init__(self, name: str, bps: float, priority: int = 1, *, paused: bool = False, active: bool = True,
                 can_probe: bool = True, layers: Optional[list[float]] = None) -> None:
        self.name = name
        self._bps = bps
        self.layers = layers
        self.layer = 0 if layers is None else len(layers) - 1
        self.priority = priority
        self.paused = paused
        self.active = active
        self.can_probe = can_probe
        self.padding: list[tuple[int, float]] = []
        self.blocked = False  # padding cannot go out

    def __repr__(self) -> str:
        return f"<{self.name}>"

    @property
    def bps(self) -> float:
        return self._bps if self.layers is None else self.layers[self.layer]

    @bps.setter
    def bps(self, value: float) -> None:
        self._bps = value

    def offered_bps(self, now: float) -> float:
        return self.bps

    def layer_rates(self, now: float) -> list[float]:
        return [self._bps] if self.layers is None else list(self.layers)

    def select_layer(self, index: int) -> None:
        if self.layers is not None:
            assert 0 <= index < len(self.layers)
            self.layer = index

    def pause(self) -> None:
        assert not self.paused
        self.paused = True

    def resume(self) -> None:
        assert self.paused
        self.paused = False

    async def send_padding(self, nbytes: int, now: float) -> int:
        if self.blocked:
            return 0
        sent = nbytes // self.PADDING_PACKET * self.PADDING_PACKET
        self.padding.append((sent, now))
        return sent


class NullTransport:
    """Where the pacer would send (these tests never let its drain run)."""

    async def _send_rtp(self, data: bytes) -> None:
        pass


class Downlink:
    """One subscriber: budget, controller, videos and a clock stepped by hand."""

    def __init__(self, *videos: FakeVideo, audio_bps: float = 40_000, remb: Optional[float] = 3_000_000) -> None:
        self.budget = SendBudget()
        self.estimate = self.budget.estimate
        self.videos = list(videos)
        self.audio_bps = audio_bps
        self.remb = remb  # sent every REMB_EVERY steps (None: none)
        self.rtt: Optional[float] = CLEAN  # sampled every RTT_EVERY steps (None: none)
        self.ticking = True
        self.step = 0
        self.changes: list[tuple[str, bool, float]] = []
        self.probes: list[tuple[Probe, float]] = []  # every probe seen running, with when it was first seen
        self.ctrl = DownlinkController(self.budget, lambda: self.videos, lambda v: v.priority, self._changed,
                                       name="test")

    @property
    def now(self) -> float:
        return 100.0 + self.step * STEP

    def _changed(self, video: FakeVideo, paused: bool) -> None:
        assert video.paused == paused  # told after the video changed
        self.changes.append((video.name, paused, self.now))

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.step += 1
            now = self.now
            if self.audio_bps:
                self.budget.note_media(round(self.audio_bps / 8 * STEP) - PACKET_OVERHEAD_BYTES, now, audio=True)
            for video in self.videos:
                if video.active and not video.paused:
                    self.budget.note_media(round(video.bps / 8 * STEP) - PACKET_OVERHEAD_BYTES, now, audio=False)
            if self.rtt is not None and self.step % RTT_EVERY == 0:
                self.estimate.note_rtt(self.rtt, now)
            if self.remb is not None and self.step % REMB_EVERY == 1:
                self.estimate.note_remb(round(self.remb), frozenset({1}), now)
            if self.ticking and self.step % TICK_EVERY == 0:
                self.tick()

    def run_until(self, condition, limit: float) -> None:
        end = self.step + round(limit / STEP)
        while not condition():
            assert self.step < end, "condition not reached"
            self.run(STEP)

    def tick(self) -> None:
        self.ctrl.tick(self.now)
        probe = self.ctrl.probe
        if probe is not None and (not self.probes or self.probes[-1][0] is not probe):
            self.probes.append((probe, self.now))

    def sample(self, rtt: float) -> None:
        self.estimate.note_rtt(rtt, self.now)

    def congest(self) -> None:
        """Queue now: two samples well over the path's RTT."""
        self.sample(QUEUED)
        self.sample(QUEUED)
        assert self.estimate.congested

    def paused(self) -> list[str]:
        return [v.name for v in self.videos if v.paused]


def narrow_link(*videos: FakeVideo, **kwargs) -> Downlink:
    """A downlink that queued a moment ago (narrow, no longer congested) with no video paused for it."""
    h = Downlink(*videos, **kwargs)
    kept, h.videos = h.videos, [v for v in videos if not v.paused]  # a wide link would resume them
    h.run(2.0)
    h.videos = []  # nothing to pause while the queue shows
    h.congest()
    h.tick()
    h.sample(CLEAN)
    h.sample(CLEAN)
    h.videos = kept
    assert h.budget.narrow and not h.budget.congested
    return h


def fail_probe(h: Downlink) -> float:
    """Make the running probe fail by a queueing sample; returns when it failed."""
    assert h.ctrl.probe is not None
    h.sample(PROBE_HURT)
    h.tick()
    assert h.ctrl.probe is None
    assert not h.budget.congested
    return h.now


# --- allocating layers --------------------------------------------------------------------


def demand(name: str, bitrate: float, priority: int, forwarded: bool = True,
           layers: Optional[list[float]] = None) -> Demand:
    video = FakeVideo(name, bitrate, layers=layers)
    return Demand(video, priority, video.layer_rates(0.0), video.layer, forwarded)


def kept(available: float, demands: list[Demand]) -> list[str]:
    chosen = allocate(available, demands)
    return [d.video.name for d in sorted(demands, key=lambda d: -d.priority) if chosen[id(d.video)] is not None]


def test_allocation_takes_the_most_important_first():
    demands = [demand("low", 500, 1), demand("high", 500, 3), demand("mid", 500, 2)]
    assert kept(1000, demands) == ["high", "mid"]
    assert kept(1500, demands) == ["high", "mid", "low"]
    assert kept(499, demands) == []


def test_allocation_skips_one_that_does_not_fit_and_fills_with_smaller_ones():
    demands = [demand("big", 900, 3), demand("small", 300, 2), demand("tiny", 100, 1)]
    assert kept(500, demands) == ["small", "tiny"]


def test_allocation_asks_headroom_of_a_paused_video():
    exact = [demand("paused", 1000, 1, forwarded=False)]
    assert kept(1000, exact) == []
    assert kept(1000 * RESUME_HEADROOM, exact) == ["paused"]
    assert kept(1000, [demand("forwarded", 1000, 1)]) == ["forwarded"]


def test_allocation_gives_every_video_its_lowest_layer_before_any_a_better_one():
    high = demand("high", 0, 3, layers=[150, 500, 1500])
    low = demand("low", 0, 1, layers=[150, 500, 1500])
    chosen = allocate(900, [low, high])
    assert chosen[id(high.video)] == 1 and chosen[id(low.video)] == 0  # 500 + 150, not 1500 alone
    chosen = allocate(2100, [low, high])
    assert chosen[id(high.video)] == 2 and chosen[id(low.video)] == 1


def test_allocation_never_takes_a_video_above_the_layer_it_carries_nor_onto_a_silent_one():
    v = demand("v", 0, 1, layers=[150, 500, 1500])
    v.layer = 1
    assert allocate(10_000, [v])[id(v.video)] == 1
    silent_middle = demand("s", 0, 1, layers=[150, 0, 1500])
    assert allocate(1000, [silent_middle])[id(silent_middle.video)] == 0
    assert silent_middle.usable == [0, 2] and silent_middle.next_up() is None  # it carries the top one


# --- nothing to do -------------------------------------------------------------------------


def test_no_videos_no_action_but_the_budget_is_updated():
    h = Downlink()
    h.run(2.0)
    h.congest()
    h.tick()
    assert h.budget.narrow  # update ran: the queue made the link narrow
    assert h.ctrl.summary() == {"pauses": 0, "resumes": 0, "layer_downs": 0, "layer_ups": 0, "probes": 0,
                                "probes_failed": 0, "probing": False}


def test_without_any_estimate_only_a_probe_that_got_through_brings_a_video_back():
    v = FakeVideo("v", 300_000, paused=True)
    h = Downlink(v, remb=None)
    h.run(0.5)
    assert h.budget.estimate_bps(h.now) is None
    assert h.paused() == ["v"] and h.ctrl.probes == 1 and h.changes == []
    h.run_until(lambda: not v.paused, limit=5.0)
    assert h.ctrl.probes_failed == 0 and h.changes == [("v", False, h.now)]


def test_without_any_estimate_a_subscriber_on_its_lowest_layers_climbs_by_probes():
    """A new subscriber starts on the lowest layers; a browser that sends no receiver
    estimate (or not yet) must not keep it there."""
    v = FakeVideo("v", 0, 1, layers=list(LADDER))
    v.layer = 0
    h = Downlink(v, remb=None)
    h.run_until(lambda: v.layer == 2, limit=20.0)
    assert h.ctrl.layer_ups == 2 and h.ctrl.probes >= 2 and h.ctrl.probes_failed == 0


def test_inactive_videos_are_left_alone():
    idle = FakeVideo("idle", 300_000, active=False)
    h = Downlink(idle)
    h.run(2.0)
    h.congest()
    h.run(2.0)
    assert not idle.paused and h.changes == []
    idle.active, idle.paused = False, True
    h.rtt = CLEAN
    h.run(5.0)
    assert idle.paused and h.ctrl.probes == 0 and h.changes == []


def test_a_clean_link_with_room_changes_nothing():
    a, b = FakeVideo("a", 500_000, 2), FakeVideo("b", 500_000, 1)
    h = Downlink(a, b)
    h.run(10.0)
    assert h.changes == [] and h.ctrl.probes == 0
    assert not h.budget.narrow


# --- pausing under congestion ------------------------------------------------------------


def test_congestion_pauses_the_least_important_video_first():
    high, low, mid = FakeVideo("high", 400_000, 3), FakeVideo("low", 400_000, 1), FakeVideo("mid", 400_000, 2)
    h = Downlink(high, low, mid)
    h.run(2.0)
    h.congest()
    h.tick()
    assert h.changes == [("low", True, h.now)]
    assert h.ctrl.pauses == 1


def test_under_congestion_what_does_not_fit_in_what_arrives_goes_first():
    big, small = FakeVideo("big", 600_000, 2), FakeVideo("small", 100_000, 1)
    h = Downlink(big, small)
    h.run(2.0)
    for k in range(round(1.0 / STEP)):  # a second of reports: 600 kbit/s arrive, whatever the estimate says
        h.estimate.note_delivered(round(600_000 / 8 * STEP), h.now - 1.0 + (k + 1) * STEP)
    h.congest()
    h.tick()
    assert h.estimate.capacity is None  # too short a record to stand for the link
    assert h.budget.estimate_bps(h.now) > 1_000_000
    # big does not fit in what arrives (less the share kept for draining); small fits in what is left
    assert h.paused() == ["big"]


def test_congestion_pauses_even_without_any_estimate():
    v = FakeVideo("v", 400_000)
    h = Downlink(v, remb=None)
    h.run(2.0)
    h.congest()
    h.tick()
    assert h.paused() == ["v"]


def test_the_queue_keeps_pausing_one_per_feedback_round():
    videos = [FakeVideo(f"v{p}", 300_000, p) for p in (1, 2, 3, 4)]
    h = Downlink(*videos)
    h.run(2.0)
    h.rtt = QUEUED
    h.run(6.0)
    times = [at for _, paused, at in h.changes if paused]
    assert [name for name, _, _ in h.changes] == ["v1", "v2", "v3", "v4"][:len(times)]
    assert len(times) >= 3
    assert all(b - a >= PAUSE_SPACING_S - 1e-9 for a, b in zip(times, times[1:]))


def test_a_second_pause_needs_both_the_spacing_and_two_new_rtt_samples():
    high, low = FakeVideo("high", 400_000, 2), FakeVideo("low", 400_000, 1)
    h = Downlink(high, low)
    h.run(2.0)
    h.rtt = None  # samples by hand from here
    h.congest()
    h.tick()
    first = h.now
    assert h.paused() == ["low"]
    h.run(0.1)
    h.sample(QUEUED)
    h.sample(QUEUED)
    h.run(0.4)
    h.tick()
    assert h.paused() == ["low"]  # two samples, but within the spacing
    h.run(PAUSE_SPACING_S)
    h.tick()
    assert h.paused() == ["high", "low"]
    assert h.changes[-1][:2] == ("high", True)
    assert h.changes[-1][2] - first >= PAUSE_SPACING_S

    h2 = Downlink(FakeVideo("high", 400_000, 2), FakeVideo("low", 400_000, 1))
    h2.run(2.0)
    h2.rtt = None
    h2.congest()
    h2.tick()
    h2.run(PAUSE_SPACING_S + 0.5)
    h2.sample(QUEUED)
    h2.tick()
    assert h2.paused() == ["low"]  # spacing, but only one new sample
    h2.sample(QUEUED)
    h2.tick()
    assert h2.paused() == ["high", "low"]


async def test_the_first_pause_waits_for_two_rtt_samples():
    v = FakeVideo("v", 400_000)
    h = Downlink(v)
    h.rtt = None
    h.run(2.0)
    try:
        # video waiting long in the pacer: congestion, though no RTT sample has come yet
        h.budget.pacer.enqueue(NullTransport(), b"x" * 1000, VIDEO, h.now - PACER_CONGESTED_S - 0.1)
        h.tick()
        assert h.budget.congested
        assert not v.paused
        h.sample(CLEAN)
        h.tick()
        assert not v.paused
        h.sample(CLEAN)
        h.tick()
        assert v.paused
    finally:
        await h.budget.pacer.close()


def test_pausing_is_told_and_quiets_the_receivers_drops():
    low = FakeVideo("low", 400_000, 1)
    h = Downlink(FakeVideo("high", 400_000, 2), low)
    h.run(2.0)
    h.congest()
    h.tick()
    assert h.changes == [("low", True, h.now)]
    drops = h.estimate.remb_drops
    h.estimate.note_remb(100_000, frozenset({1}), h.now + 0.5)  # falls as the receiver gets less
    assert h.estimate.remb_drops == drops


async def test_video_waiting_briefly_in_the_pacer_changes_nothing():
    h = narrow_link(FakeVideo("high", 400_000, 2), FakeVideo("low", 400_000, 1))
    h.run(0.5)
    try:
        h.budget.pacer.enqueue(NullTransport(), b"x" * 1000, VIDEO, h.now - PACER_SHED_S * 0.8)
        h.tick()
        assert h.ctrl.probe is None and h.paused() == []
    finally:
        await h.budget.pacer.close()


async def test_video_outgrowing_the_pacers_rate_is_paused():
    h = narrow_link(FakeVideo("high", 400_000, 2), FakeVideo("low", 400_000, 1))
    h.run(0.5)
    try:
        h.budget.pacer.enqueue(NullTransport(), b"x" * 1000, VIDEO, h.now - PACER_SHED_S - 0.1)
        h.tick()
        assert not h.budget.congested  # no queue at the bottleneck: this one is ours
        assert h.paused() == ["low"]
    finally:
        await h.budget.pacer.close()


async def test_video_outgrowing_the_pacers_rate_is_paused_when_a_queue_shows():
    h = narrow_link(FakeVideo("high", 400_000, 2), FakeVideo("low", 400_000, 1))
    h.run(0.5)
    try:
        h.rtt = PROBE_HURT  # a queue, though not yet congestion
        h.run(1.5)
        assert not h.budget.congested
        h.budget.pacer.enqueue(NullTransport(), b"x" * 1000, VIDEO, h.now - PACER_SHED_S - 0.1)
        h.tick()
        assert h.ctrl.probe is None and h.paused() == ["low"]
    finally:
        await h.budget.pacer.close()


# --- resuming directly ---------------------------------------------------------------------


def test_a_paused_video_resumes_directly_when_not_narrow_and_the_estimate_has_room():
    shown, paused = FakeVideo("shown", 1_000_000, 2), FakeVideo("paused", 300_000, 1, paused=True)
    h = Downlink(shown, paused)
    h.run(1.5)
    assert h.changes and h.changes[0][:2] == ("paused", False)
    assert h.ctrl.probes == 0 and h.ctrl.resumes == 1


def test_room_for_the_video_alone_is_not_enough_it_needs_headroom():
    shown = FakeVideo("shown", 1_000_000, 2)
    waiting = FakeVideo("waiting", 100_000, 1, paused=True, can_probe=False)
    h = Downlink(shown, waiting)
    h.ticking = False
    h.run(1.5)
    now = h.now
    room = h.budget.estimate_bps(now) - h.budget.audio.bps(now) - shown.bps
    waiting.bps = room / (RESUME_HEADROOM - 0.02)  # fits, but without the headroom
    h.tick()
    assert waiting.paused
    waiting.bps = room / (RESUME_HEADROOM + 0.02)
    h.tick()
    assert not waiting.paused


def test_direct_resumes_go_one_per_tick_most_important_that_fits_first():
    shown = FakeVideo("shown", 1_000_000, 5)
    huge = FakeVideo("huge", 5_000_000, 4, paused=True, can_probe=False)
    a = FakeVideo("a", 100_000, 3, paused=True)
    b = FakeVideo("b", 100_000, 2, paused=True)
    h = Downlink(shown, huge, a, b)
    h.ticking = False
    h.run(1.5)
    h.tick()
    assert h.paused() == ["huge", "b"]
    h.tick()
    assert h.paused() == ["huge"]
    assert [name for name, _, _ in h.changes] == ["a", "b"]


def test_without_room_a_paused_video_stays_paused_on_a_wide_link():
    shown = FakeVideo("shown", 100_000, 2)
    waiting = FakeVideo("waiting", 500_000, 1, paused=True, can_probe=False)
    h = Downlink(shown, waiting, remb=500_000)
    h.run(10.0)
    assert waiting.paused and h.changes == []


def test_on_a_narrow_link_a_paused_video_does_not_resume_directly_however_much_room():
    shown, low = FakeVideo("shown", 1_000_000, 2), FakeVideo("low", 300_000, 1, can_probe=False)
    h = Downlink(shown, low)
    h.run(2.0)
    h.congest()
    h.tick()
    paused_at = h.now
    assert h.paused() == ["low"]
    h.run(NARROW_MEMORY_S - 1.0)
    assert low.paused and h.budget.narrow  # the estimate had room all along
    h.run_until(lambda: not low.paused, limit=3.0)
    assert h.now >= paused_at + NARROW_MEMORY_S
    assert not h.budget.narrow
    assert h.ctrl.probes == 0


# --- probing -----------------------------------------------------------------------------


def test_a_video_paused_by_the_queue_is_probed_for_after_the_first_backoff():
    shown, low = FakeVideo("shown", 300_000, 2), FakeVideo("low", 300_000, 1)
    h = Downlink(shown, low)
    h.run(2.0)
    h.congest()
    h.tick()
    paused_at = h.now
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    assert h.now >= paused_at + FIRST_PROBE_BACKOFF_S
    assert h.now < paused_at + FIRST_PROBE_BACKOFF_S + TICK_S + 1e-9
    assert h.ctrl.probe.video is low


def test_probes_climb_a_ladder_and_the_last_step_resumes_the_video():
    shown = FakeVideo("shown", 200_000, 2)
    big = FakeVideo("big", 1_000_000, 1, paused=True)
    h = narrow_link(shown, big)
    h.run_until(lambda: not big.paused, limit=20.0)
    probes = [p for p, _ in h.probes]
    assert len(probes) >= 3
    first = probes[0]
    assert first.base_bps + first.rate_bps == pytest.approx(PROBE_GROWTH * max(first.base_bps, MIN_PROBE_BASE_BPS))
    for before, after in zip(probes, probes[1:-1]):
        assert after.base_bps + after.rate_bps == pytest.approx(PROBE_GROWTH * (before.base_bps + before.rate_bps))
    assert [p.final for p in probes] == [False] * (len(probes) - 1) + [True]
    last = probes[-1]
    assert last.rate_bps == pytest.approx((last.base_bps + big.bps) * RESUME_HEADROOM - last.base_bps)
    assert all(p.video is big for p in probes)
    assert h.ctrl.probes == len(probes) and h.ctrl.probes_failed == 0
    assert h.changes[-1][:2] == ("big", False)
    total = probes[-1].base_bps + probes[-1].rate_bps
    assert h.estimate.vouched(h.now) == pytest.approx(total)
    assert h.estimate.capacity >= total
    assert h.budget.estimate_bps(h.now) >= total


def test_a_raised_video_steps_down_to_make_room_for_a_paused_one_when_every_lowest_layer_fits():
    doctor = FakeVideo("doctor", 0, 2, layers=[300_000, 520_000])
    expert = FakeVideo("expert", 0, 1, layers=[300_000, 520_000], paused=True)
    expert.layer = 0
    h = narrow_link(doctor, expert)
    h.estimate.capacity = 900_000  # 40 + 1.2 x (300 + 300) kbit/s fits: both lowest layers do
    h.tick()
    assert doctor.layer == 0 and expert.paused and h.ctrl.layer_downs == 1
    # then the paused one is probed for, not the doctor's better layer
    h.run_until(lambda: h.ctrl.probe is not None, limit=10.0)
    assert h.ctrl.probe.video is expert


def test_nothing_steps_down_for_a_paused_video_when_the_lowest_layers_do_not_all_fit():
    doctor = FakeVideo("doctor", 0, 2, layers=[300_000, 520_000])
    expert = FakeVideo("expert", 0, 1, layers=[300_000, 520_000], paused=True)
    expert.layer = 0
    h = narrow_link(doctor, expert)
    h.estimate.capacity = 650_000
    h.tick()
    assert doctor.layer == 1 and h.ctrl.layer_downs == 0


def test_a_probe_that_covers_the_need_resumes_in_one_step():
    shown = FakeVideo("shown", 600_000, 2)
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(shown, small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    probe = h.ctrl.probe
    # headroom on the whole it would send, keyframes and all
    assert probe.final and probe.rate_bps == pytest.approx((probe.base_bps + small.bps) * RESUME_HEADROOM
                                                           - probe.base_bps)
    h.run_until(lambda: not small.paused, limit=PROBE_LIMIT_S)
    assert h.ctrl.probes == 1


def started_probe(rtt_by_hand: bool = True) -> tuple[Downlink, FakeVideo]:
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    if rtt_by_hand:
        h.rtt = None
        h.ticking = False
    h.run(STEP)
    h.tick()
    assert h.ctrl.probe is not None and h.ctrl.probe.final
    return h, small


def test_a_probe_succeeds_only_after_its_time():
    h, small = started_probe()
    started = h.now
    for _ in range(PROBE_RTT_SAMPLES):
        h.run(0.2)
        h.sample(CLEAN)
    h.run_until(lambda: h.now >= started + PROBE_S - STEP - 1e-9, limit=PROBE_S)
    h.tick()
    assert h.ctrl.probe is not None and small.paused  # samples enough, time not yet
    h.run(STEP)
    h.tick()
    assert h.ctrl.probe is None and not small.paused
    assert h.ctrl.resumes == 1 and h.ctrl.probes_failed == 0


def test_a_probe_succeeds_only_after_enough_samples():
    h, small = started_probe()
    for _ in range(PROBE_RTT_SAMPLES - 1):
        h.sample(CLEAN)
    h.run(PROBE_S + 0.5)
    h.tick()
    assert h.ctrl.probe is not None and small.paused  # time enough, one sample too few
    h.sample(CLEAN)
    h.tick()
    assert h.ctrl.probe is None and not small.paused


def test_a_probe_fails_on_a_sample_with_queueing():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    h.sample(BASE + PROBE_QUEUE_S * 0.9)  # a little jitter is no failure
    h.tick()
    assert h.ctrl.probe is not None
    fail_probe(h)
    assert h.ctrl.probes_failed == 1 and small.paused


def test_a_probe_fails_when_a_receiver_estimate_drops():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    h.estimate.note_remb(round(h.remb * REMB_DROP * 0.9), frozenset({1}), h.now)
    h.tick()
    assert h.ctrl.probe is None and h.ctrl.probes_failed == 1 and small.paused


def test_a_receiver_estimate_falling_just_after_a_pause_does_not_fail_a_probe():
    shown, low = FakeVideo("shown", 300_000, 2), FakeVideo("low", 100_000, 1)
    h = Downlink(shown, low)
    h.run(2.0)
    h.congest()
    h.tick()
    paused_at = h.now
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    assert h.now < paused_at + REMB_FRESH_S  # the probe began within the quiet period
    h.estimate.note_remb(round(h.remb * REMB_DROP * 0.5), frozenset({1}), h.now)
    h.remb = h.remb * REMB_DROP * 0.5
    h.tick()
    assert h.ctrl.probe is not None
    h.run_until(lambda: not low.paused, limit=PROBE_LIMIT_S)
    assert h.ctrl.probes_failed == 0


def test_a_probe_fails_without_enough_samples_in_its_time_limit():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    started = h.now
    h.rtt = None
    h.sample(CLEAN)  # one only
    h.run(PROBE_LIMIT_S - TICK_S)
    assert h.ctrl.probe is not None
    h.run_until(lambda: h.ctrl.probe is None, limit=2 * TICK_S)
    assert h.now - started > PROBE_LIMIT_S
    assert h.ctrl.probes_failed == 1 and small.paused


def test_a_probe_whose_video_went_away_is_dropped():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    small.active = False
    h.tick()
    assert h.ctrl.probe is None and h.ctrl.probes_failed == 0


def test_no_probe_when_what_is_forwarded_already_fills_the_capacity():
    def link(shown_bps: float) -> Downlink:
        h = Downlink(FakeVideo("shown", shown_bps, 2), FakeVideo("waiting", 200_000, 1, paused=True))
        kept, h.videos = h.videos, []
        h.run(3.0)
        for k in range(round(3.0 / STEP)):  # the receivers report 500 kbit/s delivered of a video sent
            h.estimate.note_delivered(round(500_000 / 8 * STEP), h.now - 3.0 + k * STEP)
            h.budget.note_media(round(shown_bps / 8 * STEP), h.now - 3.0 + k * STEP, audio=False)
        h.congest()
        h.tick()
        h.sample(CLEAN)
        h.sample(CLEAN)
        h.videos = kept
        assert h.estimate.capacity == pytest.approx(500_000, rel=0.1)
        h.run(3.0)
        return h

    assert link(1_000_000).ctrl.probes == 0
    assert link(300_000).ctrl.probes >= 1


def test_a_video_that_cannot_carry_padding_is_not_probed_for():
    h = narrow_link(FakeVideo("shown", 600_000, 2), FakeVideo("nortx", 200_000, 1, paused=True, can_probe=False))
    h.run(10.0)
    assert h.ctrl.probes == 0 and h.paused() == ["nortx"]


def test_the_most_important_paused_video_that_can_carry_padding_is_probed_for():
    a = FakeVideo("a", 200_000, 3, paused=True, can_probe=False)
    b = FakeVideo("b", 200_000, 2, paused=True)
    c = FakeVideo("c", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 5), a, b, c)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    assert h.ctrl.probe.video is b


def test_after_a_failed_probe_the_next_goes_only_a_little_past_what_held():
    big = FakeVideo("big", 2_000_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 300_000, 2), big)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    failed = h.ctrl.probe
    fail_probe(h)
    ceiling = failed.base_bps  # nothing got through before
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    probe = h.ctrl.probe
    total = probe.base_bps + probe.rate_bps
    assert total == pytest.approx(max(ceiling, probe.base_bps) * PAST_CEILING)
    assert total < PROBE_GROWTH * max(probe.base_bps, MIN_PROBE_BASE_BPS)
    # steps that get through raise the ceiling a step at a time; after CLIMBS_TO_FORGET of them
    # the link has shown itself better and the steps double again
    h.run_until(lambda: len(h.probes) >= CLIMBS_TO_FORGET + 3, limit=10.0)
    totals = [p.base_bps + p.rate_bps for p, _ in h.probes[1:]]
    growth = [after / before for before, after in zip(totals, totals[1:])]
    assert growth[:CLIMBS_TO_FORGET - 1] == pytest.approx([PAST_CEILING] * (CLIMBS_TO_FORGET - 1))
    assert growth[CLIMBS_TO_FORGET - 1:CLIMBS_TO_FORGET + 1] == pytest.approx([PROBE_GROWTH] * 2)
    assert h.ctrl.probes_failed == 1


@pytest.mark.parametrize("wait, growth", [(CEILING_MEMORY_S / 3, PAST_CEILING),
                                          (CEILING_MEMORY_S + 1.0, PROBE_GROWTH)])
def test_the_ceiling_is_forgotten_after_a_while_without_failures(wait, growth):
    big = FakeVideo("big", 2_000_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 300_000, 2), big)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    failed = h.ctrl.probe
    failed_at = fail_probe(h)
    big.can_probe = False  # no probe for a while
    h.run(wait)
    big.can_probe = True
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    probe = h.ctrl.probe
    assert h.now - failed_at >= wait
    assert probe.base_bps + probe.rate_bps == pytest.approx(growth * max(failed.base_bps, probe.base_bps), rel=0.01)


def probe_times_with_failures(h: Downlink, failures: int) -> list[tuple[float, float]]:
    """Fail the next `failures` probes at once; (failed at, next probe seen at) for each."""
    gaps = []
    h.run_until(lambda: h.ctrl.probe is not None, limit=10.0)
    for _ in range(failures):
        failed_at = fail_probe(h)
        h.run_until(lambda: h.ctrl.probe is not None, limit=MAX_PROBE_BACKOFF_S + 1.0)
        gaps.append((failed_at, h.now))
    return gaps


def test_failed_probes_back_off_doubling_up_to_a_limit():
    h = narrow_link(FakeVideo("shown", 300_000, 2), FakeVideo("big", 2_000_000, 1, paused=True))
    gaps = [start - failed for failed, start in probe_times_with_failures(h, 5)]
    expected = []
    backoff = FIRST_PROBE_BACKOFF_S
    for _ in gaps:
        expected.append(backoff)
        backoff = min(backoff * 2, MAX_PROBE_BACKOFF_S)
    assert expected[-1] == MAX_PROBE_BACKOFF_S
    for gap, want in zip(gaps, expected):
        assert want <= gap < want + TICK_S + 1e-9


def test_a_step_that_got_through_past_the_ceiling_resets_the_backoff():
    h = narrow_link(FakeVideo("shown", 300_000, 2), FakeVideo("big", 20_000_000, 1, paused=True))
    probe_times_with_failures(h, 3)  # backoff now well above the first
    h.run_until(lambda: len(h.probes) >= 5, limit=5.0)  # the fourth probe got through
    failed_at = fail_probe(h)
    h.run_until(lambda: h.ctrl.probe is not None, limit=MAX_PROBE_BACKOFF_S + 1.0)
    assert FIRST_PROBE_BACKOFF_S <= h.now - failed_at < FIRST_PROBE_BACKOFF_S + TICK_S + 1e-9


def resume_then_repause(after: float) -> Downlink:
    """`low` resumed by a probe, then a queue `after` seconds later pauses it again."""
    shown, low = FakeVideo("shown", 300_000, 2), FakeVideo("low", 100_000, 1)
    h = Downlink(shown, low)
    h.run(2.0)
    h.congest()
    h.tick()
    h.run_until(lambda: not low.paused, limit=FIRST_PROBE_BACKOFF_S + PROBE_LIMIT_S)
    assert h.ctrl.probes_failed == 0
    h.run(after)
    h.rtt = QUEUED
    h.run_until(lambda: low.paused, limit=2.0)
    h.rtt = CLEAN
    return h


@pytest.mark.parametrize("soon", [True, False])
def test_a_video_paused_again_soon_after_resuming_backs_off_the_probes(soon):
    h = resume_then_repause(1.0 if soon else RESUME_TRIAL_S + 1.0)
    repaused = h.changes[-1][2]
    gaps = probe_times_with_failures(h, 1)
    first_probe = h.probes[-2][1]
    assert FIRST_PROBE_BACKOFF_S <= first_probe - repaused < FIRST_PROBE_BACKOFF_S + TICK_S + 1e-9
    failed_at, next_probe = gaps[0]
    # soon: counted as a failed probe, so the backoff doubled; late: it starts afresh
    want = 2 * FIRST_PROBE_BACKOFF_S if soon else FIRST_PROBE_BACKOFF_S
    assert want <= next_probe - failed_at < want + TICK_S + 1e-9


def test_congestion_during_a_probe_fails_it_then_pauses_only_if_the_queue_stays():
    shown = FakeVideo("shown", 300_000, 2)
    big = FakeVideo("big", 2_000_000, 1, paused=True)
    h = narrow_link(shown, big)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    h.congest()
    h.tick()
    assert h.ctrl.probe is None and h.ctrl.probes_failed == 1
    h.sample(QUEUED)
    h.tick()
    assert not shown.paused  # the probe's own queue: it drains now the padding stopped
    h.ticking = False
    h.run(PAUSE_SPACING_S)
    h.sample(QUEUED)
    h.sample(QUEUED)
    h.tick()
    assert shown.paused  # the next feedback round says it stayed


def test_summary_counts():
    low = FakeVideo("low", 100_000, 1)
    h = Downlink(FakeVideo("shown", 300_000, 2), low)
    h.run(2.0)
    h.congest()
    h.tick()
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    assert h.ctrl.summary() == {"pauses": 1, "resumes": 0, "layer_downs": 0, "layer_ups": 0, "probes": 1,
                                "probes_failed": 0, "probing": True}
    h.run_until(lambda: not low.paused, limit=PROBE_LIMIT_S)
    assert h.ctrl.summary() == {"pauses": 1, "resumes": 1, "layer_downs": 0, "layer_ups": 0, "probes": 1,
                                "probes_failed": 0, "probing": False}
    assert [(name, paused) for name, paused, _ in h.changes] == [("low", True), ("low", False)]


def test_after_a_failed_probe_with_nothing_else_sent_the_next_probe_still_sends():
    only = FakeVideo("only", 300_000, 1)
    h = Downlink(only, audio_bps=0)
    h.run(2.0)
    h.congest()
    h.tick()
    assert only.paused
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    assert h.ctrl.probe.rate_bps > 0
    fail_probe(h)
    h.run_until(lambda: h.ctrl.probe is not None, limit=MAX_PROBE_BACKOFF_S + 1.0)
    assert h.ctrl.probe.rate_bps > 0


# --- padding -------------------------------------------------------------------------------


async def test_padding_goes_at_about_the_probes_rate():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    rate = h.ctrl.probe.rate_bps
    calls = 100  # two seconds of padding ticks
    for k in range(calls):
        await h.ctrl.pad(h.now + k * PADDING_TICK_S)
    sent = sum(n for n, _ in small.padding)
    assert sent <= rate / 8 * calls * PADDING_TICK_S
    assert sent >= rate / 8 * calls * PADDING_TICK_S - FakeVideo.PADDING_PACKET


async def test_padding_owed_while_it_could_not_go_is_capped():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    rate = h.ctrl.probe.rate_bps
    small.blocked = True
    for k in range(50):
        await h.ctrl.pad(h.now + k * PADDING_TICK_S)
    small.blocked = False
    await h.ctrl.pad(h.now + 1.0)
    burst = small.padding[-1][0]
    assert burst <= rate / 8 * 0.1  # a tenth of a second's worth, not a second's
    assert burst >= rate / 8 * 0.1 - FakeVideo.PADDING_PACKET


async def test_a_probe_a_sample_failed_ends_at_the_next_padding_step_not_the_next_tick():
    small = FakeVideo("small", 200_000, 1, paused=True)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run_until(lambda: h.ctrl.probe is not None, limit=1.0)
    await h.ctrl.pad(h.now)
    sent = len(small.padding)
    h.sample(BASE + PROBE_QUEUE_S * 2)
    await h.ctrl.pad(h.now + PADDING_TICK_S)
    assert h.ctrl.probe is None and h.ctrl.probes_failed == 1 and small.paused
    assert len(small.padding) == sent  # not one more packet of it


async def test_no_padding_without_a_probe():
    small = FakeVideo("small", 200_000, 1, paused=True, can_probe=False)
    h = narrow_link(FakeVideo("shown", 600_000, 2), small)
    h.run(1.0)
    await h.ctrl.pad(h.now)
    assert small.padding == []


async def test_the_running_controller_ticks_on_its_own_until_stopped():
    only = FakeVideo("only", 100_000, 1)
    h = Downlink(only)
    h.ticking = False
    h.run(2.0)
    h.congest()
    h.ctrl.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while not only.paused:  # its first tick comes TICK_S after the start
            assert loop.time() < deadline
            await asyncio.sleep(0.01)
    finally:
        await h.ctrl.stop()
    assert h.ctrl.pauses == 1
    assert h.ctrl._task is None


# --- simulcast layers --------------------------------------------------------------------

LADDER = [150_000, 500_000, 1_500_000]


def test_under_congestion_layers_step_down_before_any_video_is_paused():
    patient = FakeVideo("patient", 0, 3, layers=list(LADDER))
    doctor = FakeVideo("doctor", 0, 2, layers=list(LADDER))
    h = Downlink(patient, doctor, remb=None)
    h.run(2.0)
    for k in range(round(2.0 / STEP)):  # the link delivers 900 kbit/s of the 3 Mbit/s sent
        h.estimate.note_delivered(round(900_000 / 8 * STEP), h.now - 2.0 + k * STEP)
    h.congest()
    h.tick()
    # 85 % of 900 less the audio: each its lowest layer, then the more important one better
    assert (patient.layer, doctor.layer) == (1, 0)
    assert h.paused() == [] and h.changes == [] and h.ctrl.layer_downs == 2 and h.ctrl.pauses == 0


def test_forced_shedding_steps_the_least_important_down_one_layer_then_pauses_it():
    patient = FakeVideo("patient", 0, 3, layers=list(LADDER))
    doctor = FakeVideo("doctor", 0, 2, layers=list(LADDER))
    patient.layer = doctor.layer = 0
    h = Downlink(patient, doctor, remb=None)
    h.ticking = False  # no probe for more meanwhile: the first decision is on the queue
    h.run(2.0)
    h.congest()  # no estimate, no delivered figure: the queue alone says too much
    h.tick()
    assert h.paused() == ["doctor"] and patient.layer == 0  # nothing lower left for the doctor's video


def test_on_a_wide_link_a_video_climbs_back_to_its_top_layer():
    v = FakeVideo("v", 0, 1, layers=list(LADDER))
    v.layer = 0
    h = Downlink(v, remb=5_000_000)
    # the receivers' estimate counts up to twice what is sent: the steps past that are probed
    h.run_until(lambda: v.layer == 2, limit=10.0)
    assert h.ctrl.layer_ups == 2 and h.changes == []


def wide_link_at_lowest_layer() -> tuple[FakeVideo, Downlink]:
    """A layered video on its lowest layer, a second into a link whose receiver estimates 5 Mbit/s
    (ticked by hand)."""
    v = FakeVideo("v", 0, 1, layers=[400_000, 500_000, 1_500_000])
    v.layer = 0
    h = Downlink(v, remb=5_000_000)
    h.ticking = False
    h.run(1.0)
    return v, h


def test_on_a_wide_link_a_video_goes_up_directly_when_the_estimate_has_room():
    v, h = wide_link_at_lowest_layer()
    h.tick()
    assert v.layer == 1 and h.ctrl.layer_ups == 1 and h.ctrl.probes == 0


def test_a_failed_probe_bounds_the_estimate_a_direct_step_up_trusts():
    v, h = wide_link_at_lowest_layer()
    h.ctrl.probe = Probe(v, 500_000, 440_000, True, 1, h.now, h.estimate.rtt_samples, h.estimate.remb_drops)
    h.sample(PROBE_HURT)  # 940 kbit/s queued: the receiver's 5 Mbit/s is a guess past that
    h.tick()
    assert h.ctrl.probes_failed == 1 and not h.budget.narrow
    h.ctrl._next_probe_at = float("inf")  # no further probe: only a direct step up could raise it
    h.run(1.0)
    h.tick()
    assert v.layer == 0
    h.run(CEILING_MEMORY_S)  # the failure is old news: the estimate is trusted again
    h.tick()
    assert v.layer == 1


def test_on_a_narrow_link_a_layer_up_is_earned_by_a_probe():
    v = FakeVideo("v", 0, 1, layers=list(LADDER))
    v.layer = 0
    h = narrow_link(v)
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    probe = h.ctrl.probe
    assert probe.video is v and probe.layer == 1 and v.layer == 0
    assert probe.rate_bps == pytest.approx((probe.base_bps + LADDER[1] - LADDER[0]) * RESUME_HEADROOM
                                           - probe.base_bps)
    h.run_until(lambda: v.layer == 1, limit=PROBE_LIMIT_S)
    assert h.ctrl.layer_ups == 1 and h.changes == []  # a layer change is no pause to announce


def test_a_paused_layered_video_comes_back_at_its_lowest_layer():
    v = FakeVideo("v", 0, 1, layers=list(LADDER), paused=True)
    h = narrow_link(v)
    h.run_until(lambda: h.ctrl.probe is not None, limit=FIRST_PROBE_BACKOFF_S + 1.0)
    assert h.ctrl.probe.layer == 0
    h.run_until(lambda: not v.paused, limit=3 * PROBE_LIMIT_S)
    assert v.layer == 0


def test_a_better_layer_sending_less_than_the_current_one_is_taken_at_once():
    v = FakeVideo("v", 0, 1, layers=[300_000, 250_000, 1_500_000])
    v.layer = 0
    h = Downlink(v, remb=None)
    h.ticking = False
    h.run(1.0)
    h.estimate.note_remb(500_000, frozenset({1}), h.now)  # no room for any step that costs
    h.tick()
    assert v.layer == 1 and h.ctrl.layer_ups == 1 and h.ctrl.probes == 0


def test_while_the_queue_drains_after_a_round_nothing_more_is_shed():
    a, b, c = FakeVideo("a", 400_000, 3), FakeVideo("b", 400_000, 2), FakeVideo("c", 400_000, 1)
    h = Downlink(a, b, c, remb=None)
    h.ticking = False
    h.run(2.0)
    h.sample(BASE + 6 * CONGESTED_QUEUE_S)
    h.sample(BASE + 6 * CONGESTED_QUEUE_S)
    h.tick()
    assert h.paused() == ["c"]
    h.run(PAUSE_SPACING_S)
    h.sample(BASE + 4 * CONGESTED_QUEUE_S)  # still a queue, but less of it: the last round works
    h.sample(BASE + 4 * CONGESTED_QUEUE_S)
    h.tick()
    assert h.paused() == ["c"]
    h.run(PAUSE_SPACING_S)
    h.sample(BASE + 8 * CONGESTED_QUEUE_S)  # it grew again: more must go
    h.sample(BASE + 8 * CONGESTED_QUEUE_S)
    h.tick()
    assert h.paused() == ["b", "c"]


def test_after_a_resume_the_next_probe_waits_for_the_new_rate_to_show():
    shown = FakeVideo("shown", 300_000, 2)
    small = FakeVideo("small", 200_000, 1, paused=True)
    other = FakeVideo("other", 200_000, 0, paused=True)
    h = narrow_link(shown, small, other)
    h.run_until(lambda: not small.paused, limit=10.0)
    resumed_at = h.now
    h.run_until(lambda: h.ctrl.probe is not None, limit=10.0)
    assert h.ctrl.probe.video is other and h.now - resumed_at >= SETTLE_AFTER_RAISE_S


def test_probes_for_a_better_layer_back_off_longer_than_for_a_paused_video():
    v = FakeVideo("v", 0, 1, layers=[150_000, 5_000_000, 20_000_000])
    v.layer = 0
    h = narrow_link(v)
    gaps: list[float] = []
    failed_at: Optional[float] = None
    for _ in range(6):
        h.run_until(lambda: h.ctrl.probe is not None, limit=MAX_LAYER_PROBE_BACKOFF_S + 1.0)
        if failed_at is not None:
            gaps.append(h.now - failed_at)
        failed_at = fail_probe(h)
    assert max(gaps) >= MAX_LAYER_PROBE_BACKOFF_S > MAX_PROBE_BACKOFF_S


# --- transport-cc feedback ------------------------------------------------------------


PATH_ONE_WAY = 0.03


class TransportCcDownlink(Downlink):
    """A subscriber whose browser sends transport-cc feedback every 100 ms (no REMB, no report
    RTTs) through a link of `cap_bps` (None: no cap) with a drop-tail queue of up to QUEUE_S:
    what is sent beyond the cap queues, and arrives that much later."""

    QUEUE_S = 0.3

    def __init__(self, *videos: FakeVideo, **kwargs) -> None:
        super().__init__(*videos, remb=None, **kwargs)
        self.rtt = None
        self.cap_bps: Optional[float] = None
        self.queue_s = 0.0
        self.feedback_held = False  # the receiver's feedback is late (a stalled browser, a slow path)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            super().run(STEP)
            if self.step % 2 == 0 and not self.feedback_held:
                self.feedback()

    def feedback(self) -> None:
        now = self.now
        probe = self.ctrl.probe
        sent = (self.audio_bps + sum(v.bps for v in self.videos if v.active and not v.paused)
                + (probe.rate_bps if probe is not None else 0.0))  # now, not over the meters' second
        if self.cap_bps is None:
            arrived, self.queue_s = sent, 0.0
        else:
            # a fluid queue: it grows by what is sent past the cap, drains by what the cap spares
            self.queue_s = min(self.QUEUE_S, max(0.0, self.queue_s + (sent - self.cap_bps) * 0.1 / self.cap_bps))
            arrived = self.cap_bps if self.queue_s > 0 else min(sent, self.cap_bps)
        packets = 10
        size = max(1, round(arrived / 8 * 0.1 / packets))
        one_way = PATH_ONE_WAY + self.queue_s
        sends = [now - 0.1 - one_way + k * 0.01 for k in range(packets)]
        self.estimate.note_transport_feedback([PacketResult(t, t + one_way, size) for t in sends], now)


def layered(name: str, priority: int) -> FakeVideo:
    return FakeVideo(name, 0, priority, layers=[150_000, 500_000, 1_500_000])


def test_with_transport_cc_a_link_stepping_down_is_fitted_within_a_second():
    a, b = layered("a", 2), layered("b", 1)
    h = TransportCcDownlink(a, b, audio_bps=170_000)
    h.run(3.0)
    assert h.estimate.transport_cc and (a.layer, b.layer) == (2, 2) and not h.budget.congested
    h.cap_bps = 500_000  # the link steps down; its queue fills at once
    h.run(1.0)
    # 0.85 of what arrives (425 kbit/s): audio, the more important video's lowest layer, nothing more
    assert a.layer == 0 and not a.paused and b.paused


def step_down(h: TransportCcDownlink) -> None:
    h.run(3.0)
    h.cap_bps = 500_000
    h.run(2.0)
    assert h.budget.narrow


def test_with_transport_cc_a_link_that_widened_again_is_climbed_within_eight_seconds():
    a, b = layered("a", 2), layered("b", 1)
    h = TransportCcDownlink(a, b, audio_bps=170_000)
    step_down(h)
    assert (a.layer, a.paused, b.paused) == (0, False, True)
    h.cap_bps = None  # the link widens again
    start = h.now
    h.run_until(lambda: (a.layer, b.paused, b.layer) == (2, False, 2), limit=8.0)
    assert h.now - start <= 8.0


def test_with_transport_cc_failed_probes_on_a_link_that_stays_narrow_pause_nothing_that_fits():
    a, b = layered("a", 2), layered("b", 1)
    h = TransportCcDownlink(a, b, audio_bps=170_000)
    step_down(h)
    assert (a.layer, a.paused, b.paused) == (0, False, True)
    h.run(15.0)  # b's lowest layer does not fit with the headroom: its probes fail, now and then
    assert h.ctrl.probes_failed >= 2
    assert not a.paused and h.ctrl.pauses == 1


def test_with_transport_cc_a_probe_climbs_within_itself_and_a_failed_level_keeps_the_one_below():
    a, b = layered("a", 2), layered("b", 1)
    h = TransportCcDownlink(a, b, audio_bps=170_000)
    step_down(h)
    h.cap_bps = 1_300_000  # wider, though not wide enough for everything
    seen_levels: list[float] = []
    for _ in range(round(10.0 / STEP)):
        h.run(STEP)
        probe = h.ctrl.probe
        if probe is not None and (not seen_levels or probe.rate_bps != seen_levels[-1]):
            seen_levels.append(probe.rate_bps)
        if h.ctrl.probes_failed:
            break
    assert any(later > earlier for earlier, later in zip(seen_levels, seen_levels[1:]))  # it climbed in one probe
    assert h.ctrl.probes_failed == 1
    # what the level below the failed one proved was taken at once: b is back, a went up
    assert not b.paused and a.layer >= 1
    assert h.estimate.capacity is not None and 500_000 < h.estimate.capacity <= 1_300_000


def first_probe_after_widening() -> tuple[TransportCcDownlink, Probe]:
    """Two layered videos stepped down on a 500 kbit/s link that then widens: the first probe."""
    h = TransportCcDownlink(layered("a", 2), layered("b", 1), audio_bps=170_000)
    step_down(h)
    h.cap_bps = None
    h.run_until(lambda: h.ctrl.probe is not None, limit=10.0)
    assert h.ctrl.probe is not None
    return h, h.ctrl.probe


def test_with_transport_cc_a_probes_level_is_passed_only_on_feedback_covering_it():
    h, probe = first_probe_after_widening()
    h.feedback()  # two more feedbacks at once, on packets sent before the probe
    h.feedback()
    h.feedback_held = True
    h.run(2 * RAMP_LEVEL_S)  # time enough, but nothing judged the level's own packets
    assert probe.proven_bps == 0 and probe is h.ctrl.probe
    h.feedback_held = False
    h.run_until(lambda: probe.proven_bps > 0 or h.ctrl.probe is not probe, limit=1.0)
    assert probe.proven_bps > 0


def test_with_transport_cc_a_probes_levels_land_on_the_rate_a_step_up_needs():
    """Both videos paused on a 300 kbit/s link that then widens to 500: a level of the climb is
    exactly what resuming one needs (audio + its lowest layer, with headroom), so that much is
    proven though the next level, toward both, fails."""
    a, b = layered("a", 2), layered("b", 1)
    h = TransportCcDownlink(a, b, audio_bps=170_000)
    h.run(3.0)
    h.cap_bps = 300_000
    h.run(3.0)
    assert a.paused and b.paused
    h.run(1.0)  # its queue drained
    h.cap_bps = 500_000
    landed: list[bool] = []
    while a.paused:
        h.run(STEP)
        probe = h.ctrl.probe
        if probe is not None and probe.proven_bps:
            landed.append(any(abs(probe.proven_bps - total) < 1 for total in probe.totals))
        assert h.now < 130.0, "a did not come back"
    assert landed and landed[-1] and b.paused


def test_with_transport_cc_probes_past_a_failure_stay_near_the_ceiling():
    """On a link that stays narrow, a probe after a failure does not climb on past the rate that
    failed: each such probe costs the audio only a small overshoot."""
    a, b = layered("a", 2), layered("b", 1)
    h = TransportCcDownlink(a, b, audio_bps=170_000)
    step_down(h)
    h.run_until(lambda: h.ctrl.probes_failed > 0, limit=10.0)
    highest = 0.0
    for _ in range(round(20.0 / STEP)):
        h.run(STEP)
        probe = h.ctrl.probe
        if probe is not None:
            highest = max(highest, probe.base_bps + probe.rate_bps)
    assert h.ctrl.probes > 2 and 0 < highest <= 500_000 * 1.25


def test_with_transport_cc_a_level_whose_queue_grows_fails_under_the_40_ms_mark():
    """A quarter second 10 % past a 1 Mbit/s link builds only 25 ms of queue: a level fails on
    the queue growing, or it would be taken as proven past the link."""
    h, probe = first_probe_after_widening()
    h.feedback_held = True
    for k in range(1, 4):  # feedback on the level's packets, each 8 ms later than the one before
        now = h.now
        sends = [now - 0.1 - PATH_ONE_WAY + j * 0.01 for j in range(10)]
        delay = PATH_ONE_WAY + 0.008 * k
        h.estimate.note_transport_feedback([PacketResult(t, t + delay, 600) for t in sends], now)
        h.run(0.1)
    assert delay - PATH_ONE_WAY < PROBE_QUEUE_S  # under the mark all along
    assert h.ctrl.probe is not probe and h.ctrl.probes_failed > 0


def test_with_transport_cc_a_step_up_that_does_not_stick_is_taken_once():
    """A layered source that ignores a layer change (the down-track left it meanwhile) must not
    keep the controller raising it for ever."""
    a = layered("a", 2)
    a.select_layer = lambda index: None  # type: ignore[method-assign]
    a.layer = 0
    h = TransportCcDownlink(a, audio_bps=170_000)
    h.run(1.0)
    assert h.ctrl._raise_within(5_000_000, h.now) is True
    assert a.layer == 0
