"""Which remote videos one subscriber's downlink carries: audio first, video as it fits.

A few times a second the controller compares what the subscriber's videos need
with what its downlink is estimated to carry (media/send_budget.py). When a queue
builds at the bottleneck it pauses the videos that do not fit what the link delivers,
the least important first, at least one per feedback round, so the audio (never
paused) stays in time. A paused video comes
back by itself: directly when the estimate has room for it, otherwise after a
probe — padding at the video's rate on the paused stream's retransmission SSRC —
got through without a queue building. Probes climb in steps; after one fails, the
next go only a little past what got through, after a back-off of up to 4 s, so a
link that stays narrow pays for small overshoots now and then.

A video sent in simulcast layers (media/simulcast.py) is a ladder of smaller
demands: shedding steps it down a layer before any video is paused, every video
gets its lowest layer before any gets a better one, and going up a layer is earned
like a resume, directly on a wide link, by a probe on a narrow one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, Protocol

from .pacer import VIDEO
from .send_budget import CONGESTED_TARGET_SHARE, SendBudget

logger = logging.getLogger(__name__)

TICK_S = 0.25
PADDING_TICK_S = 0.02
# Video waiting this long in the pacer has outgrown the rate (a keyframe alone waits about
# half a second at 1 Mbit/s).
PACER_SHED_S = 0.6
# One pause per feedback round: the RTT reports lag the queue by about this much; transport-cc
# feedback comes every 100 ms, so a round is about an RTT and one feedback interval.
PAUSE_SPACING_S = 1.0
TRANSPORT_CC_PAUSE_SPACING_S = 0.3
# A queue shrinking since the last round stands for that round's change working, this long.
SHRINKING_TRUST_S = 3.0
# A paused video resumes only with this much room to spare (its rate varies; keyframes).
RESUME_HEADROOM = 1.2
# A probe lasts at least this long and until this many RTT samples judged it (receivers
# report about once a second per stream), but no longer than the limit.
PROBE_S = 1.0
PROBE_RTT_SAMPLES = 2
# Transport-cc feedback times every packet ten times a second: half a second of it judges a probe.
TRANSPORT_CC_PROBE_S = 0.5
# With it a probe climbs within itself: a level is proven once feedback on packets sent over
# this long of it (and two feedbacks) showed no queue, and the next level climbs toward what
# every step up needs; a level that fails leaves the last one held proven, so a failure costs
# one level's overshoot, not the climb. (Judged on time alone, a level was passed on the
# feedback of its first tenth of a second, before its queue showed.)
RAMP_LEVEL_S = 0.25
# A level whose queueing grew by this much over its time fails, under the 40 ms mark too: a
# quarter second 16 % past the link builds only 40 ms, and a level passed so (1219 kbit/s on
# a 1 Mbit/s link) raised a layer the link then queued behind for seventeen seconds.
LEVEL_QUEUE_GROWTH_S = 0.01
# Each level sends this much more in all than the one it passed: a level that fails costs the
# audio its overshoot for a feedback round (doubling padding on a narrow link: 130 ms of queue).
RAMP_GROWTH = 1.5
PROBE_LIMIT_S = 3.0
# A single RTT sample with this much queueing fails a probe: it is already costing the audio.
PROBE_QUEUE_S = 0.04
FIRST_PROBE_BACKOFF_S = 2.0
MAX_PROBE_BACKOFF_S = 4.0
MAX_LAYER_PROBE_BACKOFF_S = 8.0
SETTLE_AFTER_RAISE_S = 2.0
TRANSPORT_CC_SETTLE_S = 0.5  # the keyframe's burst and the new rate show within five feedbacks
# After a probe failed, the next goes only this far past the total that failed: whether the
# link got better is asked for the price of a small overshoot, not the whole step.
PAST_CEILING = 1.1
# Probes in a row that get through past the ceiling before steps double again (the link got better).
CLIMBS_TO_FORGET = 2
# What arrives under this share of what is sent: the link, not the sender, sets the rate.
LINK_LIMITED_SHARE = 0.9
# A layer's measured rate moves this much within a probe's time (a keyframe in or out of its
# one-second window: an h step measured 851 kbit/s at a probe's start and 1089 at its end).
LAYER_RATE_MARGIN = 1.3
# A link whose probes have all got through this long is probed in doubling steps again.
CEILING_MEMORY_S = 30.0
# A video paused again this soon after it resumed counts as a failed probe.
RESUME_TRIAL_S = 5.0
# A probe at most doubles what is sent: a link too narrow for the step costs the audio
# little, and one that takes it is probed again at once from there.
PROBE_GROWTH = 2.0
MIN_PROBE_BASE_BPS = 100_000


class ControlledVideo(Protocol):
    """A video down-track the controller can pause, resume and probe through."""

    @property
    def paused(self) -> bool: ...

    @property
    def active(self) -> bool:
        """Started and carrying a source."""
        ...

    def offered_bps(self, now: float) -> float:
        """What the source sends: what forwarding it costs (measured paused or not)."""
        ...

    def layer_rates(self, now: float) -> list[float]:
        """What each layer it could carry sends, lowest first (0: not arriving); one if unlayered."""
        ...

    @property
    def layer(self) -> int:
        """The layer it carries (or is switching to)."""
        ...

    def select_layer(self, index: int) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    @property
    def can_probe(self) -> bool:
        """Whether padding can go out on it without touching its media numbering (RTX)."""
        ...

    async def send_padding(self, nbytes: int, now: float) -> int:
        """Sends up to `nbytes` of padding in whole packets; returns the bytes sent."""
        ...


@dataclass
class Demand:
    video: ControlledVideo
    priority: int
    rates: Sequence[float]  # per layer, lowest first
    layer: int  # the layer it carries
    forwarded: bool

    @property
    def bitrate(self) -> float:
        """What it costs: its layer's rate, or, while that layer is not arriving, the one it gets instead."""
        below = [i for i in self.usable if i <= self.layer]
        return self.rates[below[-1] if below else self.usable[0]]

    @property
    def usable(self) -> list[int]:
        """The layers it could carry: those arriving (an unlayered video's one, whatever its rate)."""
        arriving = [i for i, rate in enumerate(self.rates) if rate > 0]
        return arriving if len(self.rates) > 1 and arriving else [min(self.layer, len(self.rates) - 1)]

    def next_up(self) -> Optional[int]:
        """The next better layer arriving, if any."""
        return next((i for i in self.usable if i > self.layer), None)


def allocate(available: float, demands: Sequence[Demand]) -> dict[int, Optional[int]]:
    """id(video) -> the layer each demand gets in `available` bit/s (None: paused), never above
    the one it carries: first the lowest layer of each, most important first (a paused one needs
    headroom to come back; each that does not fit leaves room for smaller ones after it), then
    better layers, most important first."""
    order = sorted(demands, key=lambda d: -d.priority)
    chosen: dict[int, Optional[int]] = {}
    for demand in order:
        lowest = demand.usable[0]
        rate = demand.rates[lowest]
        need = rate if demand.forwarded else rate * RESUME_HEADROOM
        chosen[id(demand.video)] = lowest if need <= available else None
        if need <= available:
            available -= rate
    for demand in order:
        got = chosen[id(demand.video)]
        if got is None or not demand.forwarded:
            continue
        for index in reversed([i for i in demand.usable if got < i <= demand.layer]):
            extra = demand.rates[index] - demand.rates[got]
            if extra <= available:
                chosen[id(demand.video)] = index
                available -= extra
                break
    return chosen


@dataclass
class Probe:
    video: ControlledVideo
    rate_bps: float  # padding, on top of `base_bps`
    base_bps: float  # what was sent besides
    final: bool  # whether getting through brings the video back or up (or only sets the next step)
    layer: int  # the layer it brings the video to
    started: float
    samples_before: int
    drops_before: int
    credit: float = 0.0  # bytes owed to the wire since the last padding tick
    # with transport-cc a probe climbs within itself toward `goal_bps` of padding, level by level,
    # landing on `totals` (base + padding) where it can: those bring a step up
    goal_bps: float = 0.0
    totals: tuple[float, ...] = ()
    level_at: float = 0.0  # when the current level began
    samples_at_level: int = 0
    queue_at_level: float = 0.0  # the newest sample's queueing when the level began
    proven_bps: float = 0.0  # the total (base + padding) the last level passed held; 0: none yet


class DownlinkController:
    def __init__(self, budget: SendBudget, videos: Callable[[], Sequence[ControlledVideo]],
                 priority_of: Callable[[ControlledVideo], int],
                 on_change: Callable[[ControlledVideo, bool], None], name: str = "") -> None:
        self.name = name  # whose downlink, for the log
        self.budget = budget
        self._videos = videos
        self._priority_of = priority_of
        self._on_change = on_change
        self._last_pause = float("-inf")
        self._samples_at_pause = 0
        self._queue_at_pause = 0.0  # the queueing delay when the last round shed
        self._raised_at: dict[int, float] = {}  # id(video) -> when it resumed or went up a layer
        self._backoff = FIRST_PROBE_BACKOFF_S
        self._next_probe_at = float("-inf")
        self.probe: Optional[Probe] = None
        self._ceiling: Optional[float] = None  # the most sent without a queue before a probe failed
        self._last_good = 0.0  # the total the latest probe that got through sent
        self._climbs = 0  # probes in a row that got through past the ceiling
        self._failed_at = float("-inf")  # when a probe last failed
        self._task: Optional[asyncio.Task] = None
        self.pauses = 0
        self.resumes = 0
        self.layer_downs = 0
        self.layer_ups = 0
        self.probes = 0
        self.probes_failed = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            await asyncio.sleep(PADDING_TICK_S if self.probe is not None else TICK_S)
            now = loop.time()
            try:
                if self.probe is not None:
                    await self.pad(now)
                if now >= next_tick:
                    next_tick = now + TICK_S
                    self.tick(now)
            except Exception:  # the controller must not die with one odd down-track
                logger.exception("downlink control failed")

    # --- decisions ---------------------------------------------------------------

    def tick(self, now: float) -> None:
        budget = self.budget
        budget.update(now)
        estimate = budget.estimate_bps(now)
        videos = [v for v in self._videos() if v.active]
        if self.probe is not None and self.probe.video not in videos:
            self._end_probe()
        if not videos:
            return
        demands = [Demand(v, self._priority_of(v), v.layer_rates(now), v.layer, not v.paused) for v in videos]
        audio = budget.audio.bps(now)
        if logger.isEnabledFor(logging.DEBUG):  # its figures cost sums every tick: only when asked for
            logger.debug("%s: estimate %s sent %.0f delivered %.0f capacity %s queueing %.0f ms narrow %s videos %s",
                         self.name, estimate and round(estimate / 1000), budget.sent_bps(now) / 1000,
                         budget.estimate.delivered.bps(now) / 1000, budget.estimate.capacity,
                         budget.estimate.queueing_delay * 1000, budget.narrow,
                         [(round(d.bitrate / 1000), d.layer, d.forwarded) for d in demands])
        if self.probe is not None:
            self._judge_probe(now)
        elif budget.congested:  # with or without an estimate: the queue is the evidence
            # what arrives now is all the link carries, whatever the estimate still says
            # (receiver reports count media only: a probe's padding also went through the link;
            # transport-cc feedback counts every packet)
            delivered = budget.estimate.delivered_now_bps(now) + (0 if budget.estimate.transport_cc
                                                                  else budget.padding.bps(now))
            target = min(estimate, delivered) if estimate is not None and delivered > 0 else (estimate or 0.0)
            self._shed(now, target * CONGESTED_TARGET_SHARE, audio, demands, force=True)
        elif estimate is None:
            # nothing known of the link yet (no receiver estimate so far, or a browser that
            # sends none): what is forwarded stays, and only probes can show room for more
            self._restore(now, None, audio, demands)
        elif budget.narrow and budget.pacer.waiting_s(VIDEO, now) > PACER_SHED_S:
            # the videos outgrow the rate the pacer holds them to (a publisher sending more):
            # pausing one keeps the audio in time; letting them through faster as a probe
            # cost the audio more (docs/BENCHMARKS.md)
            self._shed(now, estimate, audio, demands, force=True)
        else:
            self._restore(now, estimate, audio, demands)

    def _shed(self, now: float, target: float, audio: float, demands: list[Demand], *, force: bool) -> None:
        """Pause what does not fit in `target` (all at once: a link stepping down needs it fast);
        `force`: a queue is building, so at least one goes."""
        # one pause per feedback round: its effect shows in the next reports, not at once
        link = self.budget.estimate
        spacing = TRANSPORT_CC_PAUSE_SPACING_S if link.transport_cc else PAUSE_SPACING_S
        if now - self._last_pause < spacing or link.rtt_samples < self._samples_at_pause + 2:
            return
        forwarded = [d for d in demands if d.forwarded]
        if not forwarded:
            return
        chosen = allocate(target - audio, forwarded)
        changed = [(d, chosen[id(d.video)]) for d in forwarded if chosen[id(d.video)] != d.layer]
        queueing = link.queueing_delay
        if queueing < self._queue_at_pause and now - self._last_pause < SHRINKING_TRUST_S and not (
                changed and link.transport_cc and self._link_limits(now)):
            # the queue is draining since the last round: that round's change works. What
            # arrives meanwhile follows what is sent now, and would shed more for nothing
            # (with transport-cc, what arrived over half a second well under what is sent
            # says the link still cannot take it: that is shed without waiting).
            return
        if (not changed and force) or target <= 0:
            # the queue says too much, the rate is unknown: the least important steps down (or goes)
            least = min(forwarded, key=lambda d: d.priority)
            below = [i for i in least.usable if i < least.layer]
            changed = [(least, below[-1] if below else None)]
        if not changed:
            return
        for demand, layer in changed:
            logger.info("%s: %s a video (%.0f kbit/s): target %.0f kbit/s, queueing %.0f ms", self.name,
                        "pausing" if layer is None else f"stepping down to layer {layer}", demand.bitrate / 1000,
                        target / 1000, self.budget.estimate.queueing_delay * 1000)
            if layer is None:
                self._pause(demand.video, now)
            else:
                self._step_down(demand.video, layer, now)
        self._last_pause = now
        self._samples_at_pause = self.budget.estimate.rtt_samples
        self._queue_at_pause = queueing

    @staticmethod
    def _steps_up(demands: Sequence[Demand]) -> list[tuple[Demand, int, float]]:
        """(demand, layer, bit/s it adds) for what would bring a video back (its lowest layer) or
        up a layer, most important first; every paused one before any goes up."""
        paused = sorted((d for d in demands if not d.forwarded), key=lambda d: -d.priority)
        raised = sorted((d for d in demands if d.forwarded and d.next_up() is not None), key=lambda d: -d.priority)
        steps = [(d, d.usable[0], d.rates[d.usable[0]]) for d in paused]
        for demand in raised:
            up = demand.next_up()
            assert up is not None  # chosen so above
            steps.append((demand, up, demand.rates[up] - demand.bitrate))
        return steps

    def _link_limits(self, now: float) -> bool:
        """Whether what arrives lately falls well short of what is sent: the link is the limit."""
        return self.budget.estimate.delivered_now_bps(now) < self.budget.sent_bps(now) * LINK_LIMITED_SHARE

    def _restore(self, now: float, estimate: Optional[float], audio: float, demands: list[Demand]) -> None:
        steps = self._steps_up(demands)
        if not steps:
            return
        paused = [d for d in demands if not d.forwarded]
        if paused and self._make_room(now, estimate, audio, demands):
            return
        free = next(((d, layer) for d, layer, adds in steps if d.forwarded and adds <= 0), None)
        if free is not None:  # its better layer sends less than the one it has, for now
            self._raise(free[0].video, free[1], now)
            return
        forwarded_bps = sum(d.bitrate for d in demands if d.forwarded)
        if estimate is not None and not self.budget.narrow:  # no queue seen for a while: the estimate is trusted
            if self._ceiling is not None and now - self._failed_at <= CEILING_MEMORY_S:
                # a probe past the ceiling queued: the estimate's guess above it is not (an AIMD
                # estimate grows by itself; it raised a layer into a 1 Mbit/s link's queue)
                estimate = min(estimate, self._ceiling)
            room = estimate - audio - forwarded_bps
            for demand, layer, adds in steps:
                if adds * RESUME_HEADROOM <= room:
                    logger.info("%s: %s (%.0f kbit/s more): estimate %.0f kbit/s", self.name,
                                "resuming a video" if not demand.forwarded else f"up to layer {layer}",
                                adds / 1000, estimate / 1000)
                    self._raise(demand.video, layer, now)
                    return  # one at a time: its keyframe is a burst of its own
        # On a narrow link only a probe that got through brings a video back: the receivers'
        # estimates follow what they are sent, so they cannot say what more would do.
        candidates = [step for step in steps if step[0].video.can_probe]
        if now < self._next_probe_at or not candidates:
            return
        demand, layer, adds = candidates[0]
        link = self.budget.estimate
        base = audio + forwarded_bps
        if link.capacity is not None and base > link.capacity:
            return  # what is forwarded already fills what the link was seen to carry
        # the headroom on the whole: what got through for a second must hold with keyframes
        need = (base + adds) * RESUME_HEADROOM - base
        step_to = PROBE_GROWTH * max(link.vouched(now) or base, base, MIN_PROBE_BASE_BPS)
        if self._ceiling is not None and now - self._failed_at > CEILING_MEMORY_S:
            self._ceiling = None
        if self._ceiling is not None:
            step_to = min(step_to, max(self._ceiling * PAST_CEILING, base * PAST_CEILING))
        self._start_probe(demand.video, min(need, step_to - base), base, final=need <= step_to - base,
                          layer=layer, now=now)
        if link.transport_cc and self.probe is not None:
            # a probe that gets through proves its whole rate, and every step up that fits in it
            # is taken at once (_raise_within): from the first step's level it climbs toward all
            # of them, with a margin for the layers' rates moving (keyframes). Past a failure it
            # stays within the ceiling's step until the ceiling is lifted (CLIMBS_TO_FORGET).
            totals, adds_so_far = [], 0.0
            for step in steps:
                adds_so_far += step[2] * LAYER_RATE_MARGIN
                totals.append((base + adds_so_far) * RESUME_HEADROOM)
            if self._ceiling is not None:  # past a failure, not beyond the step the ceiling allows
                totals = [t for t in totals if t <= step_to]
            self.probe.totals = tuple(sorted(totals))
            self.probe.goal_bps = max(self.probe.rate_bps, (totals[-1] - base) if totals else 0.0)

    def _make_room(self, now: float, estimate: Optional[float], audio: float, demands: list[Demand]) -> bool:
        """Every video its lowest layer before any a better one: with a video paused, the least
        important one above its lowest layer steps down, when the link holds every lowest
        layer. Otherwise a raised video keeps the room the paused one's probes need, and they
        fail for good (the expert's video stayed paused a whole run behind the doctor's m)."""
        raised = [d for d in demands if d.forwarded and d.layer > d.usable[0]]
        known = self.budget.estimate.capacity or estimate
        if not raised or known is None:
            return False
        lowest = sum(d.rates[d.usable[0]] for d in demands)
        if audio + lowest * RESUME_HEADROOM > known:
            return False
        victim = min(raised, key=lambda d: d.priority)
        layer = [i for i in victim.usable if i < victim.layer][-1]
        logger.info("%s: stepping down to layer %d (%.0f kbit/s) to make room for a paused video: %.0f kbit/s known",
                    self.name, layer, victim.bitrate / 1000, known / 1000)
        self._step_down(victim.video, layer, now)
        return True

    def _start_probe(self, video: ControlledVideo, rate_bps: float, base_bps: float, *, final: bool, layer: int,
                     now: float) -> None:
        link = self.budget.estimate
        link.mark_queueing()
        self.probe = Probe(video, rate_bps, base_bps, final, layer, now, link.rtt_samples, link.remb_drops,
                           level_at=now, samples_at_level=link.rtt_samples, queue_at_level=link.latest_queueing)
        self.probes += 1

    def _end_probe(self) -> None:
        self.probe = None

    def _probe_failing(self) -> bool:
        """A sample of the running probe already shows a queue (or an estimate falling); with
        transport-cc, a queue growing since its level began."""
        probe, link = self.probe, self.budget.estimate
        if probe is None:
            return False
        growing = link.transport_cc and link.latest_queueing - probe.queue_at_level > LEVEL_QUEUE_GROWTH_S
        return link.worst_queueing > PROBE_QUEUE_S or link.remb_drops > probe.drops_before or growing

    def _judge_probe(self, now: float) -> None:
        probe = self.probe
        assert probe is not None
        link = self.budget.estimate
        samples = link.rtt_samples - probe.samples_before
        probe_s = TRANSPORT_CC_PROBE_S if link.transport_cc else PROBE_S
        failed = self._probe_failing() or (now - probe.started > PROBE_LIMIT_S and samples < PROBE_RTT_SAMPLES)
        if failed and probe.proven_bps > 0:
            # a level it passed held: that much is proven, the level that failed is the ceiling
            logger.info("%s: probe held %.0f kbit/s, failed at %.0f + %.0f kbit/s: queueing %.0f ms", self.name,
                        probe.proven_bps / 1000, probe.base_bps / 1000, probe.rate_bps / 1000,
                        link.worst_queueing * 1000)
            self._probe_failed(probe.proven_bps, now)
            self._proven(probe.proven_bps, now)
            return
        if not failed and probe.goal_bps > probe.rate_bps and self._covered(probe.level_at + RAMP_LEVEL_S) \
                and link.rtt_samples - probe.samples_at_level >= PROBE_RTT_SAMPLES:
            total = probe.proven_bps = probe.base_bps + probe.rate_bps
            # the next level: the largest total that brings a step up within the growth, else the growth
            useful = [t for t in probe.totals if total < t <= total * RAMP_GROWTH]
            probe.rate_bps = min(probe.goal_bps, (max(useful) if useful else total * RAMP_GROWTH) - probe.base_bps)
            probe.level_at, probe.samples_at_level = now, link.rtt_samples
            probe.queue_at_level = link.latest_queueing
            return
        if failed:
            logger.info("%s: probe at %.0f + %.0f kbit/s failed: queueing %.0f ms, %d samples, %d estimates fell",
                        self.name, probe.base_bps / 1000, probe.rate_bps / 1000, link.worst_queueing * 1000,
                        samples, link.remb_drops - probe.drops_before)
            # the step that failed overshot; never below the smallest probe, or the next would send nothing
            self._probe_failed(max(self._last_good, probe.base_bps, MIN_PROBE_BASE_BPS), now)
            self._back_off(now, for_better_layer=not probe.video.paused)
        elif now - probe.level_at >= probe_s and samples >= PROBE_RTT_SAMPLES and (
                not link.transport_cc or self._covered(probe.level_at + probe_s)):
            # (with transport-cc what it brings is logged by _raise_within)
            outcome = ("" if not probe.final or link.transport_cc else ": resuming" if probe.video.paused
                       else f": up to layer {probe.layer}")
            logger.info("%s: probe at %.0f + %.0f kbit/s got through (%d samples)%s", self.name, probe.base_bps / 1000,
                        probe.rate_bps / 1000, samples, outcome)
            self._end_probe()
            total = probe.base_bps + probe.rate_bps
            if self._ceiling is not None and total > self._ceiling:
                # better than when a probe failed: a step at a time, doubling again after two
                self._climbs += 1
                self._ceiling = None if self._climbs >= CLIMBS_TO_FORGET else total
                self._backoff = FIRST_PROBE_BACKOFF_S
            if link.transport_cc:
                self._proven(total, now)
                return
            link.note_probe_ok(total, now)
            self._last_good = total
            if probe.final:
                self._raise(probe.video, probe.layer, now)
            else:
                self._next_probe_at = now  # the next step at once

    def _probe_failed(self, ceiling: float, now: float) -> None:
        """End the running probe as failed; `ceiling`: the most it (or the last one) showed the link takes."""
        link = self.budget.estimate
        self._end_probe()
        self.probes_failed += 1
        self._ceiling = ceiling
        self._climbs = 0
        self._failed_at = now
        # the queue it built drains now that it stopped: nothing is paused for it before the next
        # feedback round says the queue stayed (with transport-cc, a round is shorter than the
        # drain and padding still in flight grows the queue a little: only what does not fit in
        # what arrives is shed, for the trust period)
        self._last_pause = now
        self._samples_at_pause = link.rtt_samples
        self._queue_at_pause = float("inf") if link.transport_cc else link.queueing_delay

    def _covered(self, sent_by: float) -> bool:
        """Whether transport-cc feedback has judged packets sent up to `sent_by`."""
        newest = self.budget.estimate.newest_sample_sent_at
        return newest is not None and newest >= sent_by

    def _proven(self, total: float, now: float) -> None:
        """A probe (or a level of one) held `total` bit/s: the link takes it; take what fits."""
        self.budget.estimate.note_probe_ok(total, now)
        self._last_good = total
        if not self._raise_within(total, now):
            self._next_probe_at = now  # the next step at once

    def _raise_within(self, proven: float, now: float) -> bool:
        """After a probe got through at `proven` bit/s: every step up that fits in it with
        headroom, most important first, a layer at a time, as long as any fits (a video may
        come back and go up, or climb two layers). Whether any was taken."""
        taken: set[tuple[int, int]] = set()  # (id(video), layer): each once, should a raise not stick
        while True:
            demands = [Demand(v, self._priority_of(v), v.layer_rates(now), v.layer, not v.paused)
                       for v in self._videos() if v.active]
            forwarded = sum(d.bitrate for d in demands if d.forwarded)
            room = proven / RESUME_HEADROOM - self.budget.audio.bps(now) - forwarded
            step = next(((d, layer, adds) for d, layer, adds in self._steps_up(demands)
                         if adds <= room and (id(d.video), layer) not in taken), None)
            if step is None:
                return bool(taken)
            demand, layer, adds = step
            logger.info("%s: %s (%.0f kbit/s more) within the probe's %.0f kbit/s", self.name,
                        "resuming a video" if not demand.forwarded else f"up to layer {layer}",
                        adds / 1000, proven / 1000)
            self._raise(demand.video, layer, now)
            taken.add((id(demand.video), layer))

    async def pad(self, now: float) -> None:
        """Padding for the running probe, at its rate; a probe a sample already failed ends
        here, not at the next tick: each 20 ms more of it fills the bottleneck's queue toward
        dropping (transport-cc feedback comes ten times a second)."""
        probe = self.probe
        if probe is None:
            return
        if self._probe_failing():
            self._judge_probe(now)
            return
        probe.credit = min(probe.credit + probe.rate_bps / 8 * PADDING_TICK_S, probe.rate_bps / 8 * 0.1)
        probe.credit -= await probe.video.send_padding(int(probe.credit), now)

    def _back_off(self, now: float, *, for_better_layer: bool = False) -> None:
        """`for_better_layer`: a video that plays already waits longer for more (a failed probe
        costs the audio a queue; a layer up is worth less than a video back)."""
        self._next_probe_at = now + self._backoff
        limit = MAX_LAYER_PROBE_BACKOFF_S if for_better_layer else MAX_PROBE_BACKOFF_S
        self._backoff = min(self._backoff * 2, limit)

    def _lowered(self, video: ControlledVideo, now: float) -> None:
        """Probing waits after a step down; longer if what was vouched for did not hold."""
        raised_at = self._raised_at.pop(id(video), None)
        if raised_at is not None and now - raised_at < RESUME_TRIAL_S:
            self._back_off(now)  # what the probe vouched for did not hold
        elif raised_at is not None:
            self._backoff = FIRST_PROBE_BACKOFF_S
            self._next_probe_at = now + self._backoff
        else:
            self._next_probe_at = max(self._next_probe_at, now + self._backoff)

    def _pause(self, video: ControlledVideo, now: float) -> None:
        self._lowered(video, now)
        video.pause()
        self.budget.estimate.note_paused(now)
        self.pauses += 1
        self._on_change(video, True)

    def _step_down(self, video: ControlledVideo, layer: int, now: float) -> None:
        self._lowered(video, now)
        video.select_layer(layer)
        # its receiver's estimate falls with what it is sent, as after a pause: not a failed probe
        self.budget.estimate.note_paused(now)
        self.layer_downs += 1

    def _raise(self, video: ControlledVideo, layer: int, now: float) -> None:
        """Resume a paused video at `layer`, or take a forwarded one up to it."""
        self._raised_at[id(video)] = now
        # the next probe waits for this step's keyframe and a feedback round on the new rate
        settle = TRANSPORT_CC_SETTLE_S if self.budget.estimate.transport_cc else SETTLE_AFTER_RAISE_S
        self._next_probe_at = max(self._next_probe_at, now + settle)
        video.select_layer(layer)
        if video.paused:
            video.resume()
            self.resumes += 1
            self._on_change(video, False)
        else:
            self.layer_ups += 1

    def summary(self) -> dict:
        return {"pauses": self.pauses, "resumes": self.resumes, "layer_downs": self.layer_downs,
                "layer_ups": self.layer_ups, "probes": self.probes,
                "probes_failed": self.probes_failed, "probing": self.probe is not None}
