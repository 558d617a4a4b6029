"""Network impairment in our own code: loss, bursty loss, delay, jitter, a rate cap.

No root, no netem: the load-test client applies these to each of its peer
connections' RTP and RTCP (loadtest.impaired_transport wires them into aiortc).
Everything here is pure: a `Link` is asked `admit(now, size)` for each packet
and answers the time the packet comes out of the link, or None when the link
drops it. Given its seed, a link makes the same decisions for the same packet
sequence every time, so runs are repeatable and the stages unit-testable.

A link is a chain, in the order a real path has them:

1. loss: independent (Bernoulli) or bursty (Gilbert-Elliott: a Good state that
   loses nothing, a Bad state that loses every packet, mean burst length given);
2. a bottleneck: a token bucket at the capped rate feeding from a bounded FIFO
   queue; a packet that does not fit in the queue is dropped (drop-tail). The
   rate may step during the call (`rate_steps`, timed from the link's first
   packet): a downlink that narrows and recovers mid-call;
3. propagation: a fixed delay plus uniform jitter. Jitter keeps packets in order
   by default (a packet never overtakes the one before it, as in a queueing
   network); `reorder=True` lets it, as netem does.

Profiles give each participant an uplink and a downlink link. RTT in a profile
is split half each way; jitter applies to each direction on its own.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Optional

# Bytes a packet occupies on the wire beyond the RTP/RTCP bytes we see: SRTP
# auth tag (10; SRTCP adds a 4-byte index) + UDP (8) + IPv4 (20).
WIRE_OVERHEAD = 40
# The same for a datagram that is already SRTP-protected (the downlink side): UDP + IPv4.
DATAGRAM_OVERHEAD = 28
MAX_PACKET = 1500


@dataclass(frozen=True)
class LinkSpec:
    """One direction of one participant's network path."""

    loss: float = 0.0  # independent loss probability per packet
    burst_loss: float = 0.0  # Gilbert-Elliott long-run loss rate (0: off; exclusive with `loss`)
    mean_burst: float = 3.0  # Gilbert-Elliott mean loss-burst length, packets
    delay_ms: float = 0.0  # one-way base delay
    jitter_ms: float = 0.0  # uniform in [-jitter, +jitter] around the base delay
    rate_kbps: Optional[float] = None  # bottleneck rate (None: no cap)
    queue_ms: float = 500.0  # bottleneck queue limit, in milliseconds' worth of the rate
    burst_bytes: int = 2 * (MAX_PACKET + WIRE_OVERHEAD)  # token bucket depth
    reorder: bool = False
    # (seconds after the link's first packet, new cap in kbit/s or None for no cap), in time order
    rate_steps: tuple[tuple[float, Optional[float]], ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.burst_loss < 1.0:
            raise ValueError("loss rates must be in [0, 1)")
        if self.loss and self.burst_loss:
            raise ValueError("use either random loss or bursty loss on one link, not both")
        if self.mean_burst < 1.0:
            raise ValueError("mean_burst is in packets and at least 1")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.jitter_ms > self.delay_ms:
            raise ValueError("need 0 <= jitter_ms <= delay_ms (a packet cannot leave before it was sent)")
        if self.rate_kbps is not None and self.rate_kbps <= 0:
            raise ValueError("rate_kbps must be positive")
        steps = tuple((float(at), None if rate is None else float(rate)) for at, rate in self.rate_steps)
        object.__setattr__(self, "rate_steps", steps)  # JSON gives lists; keep the spec hashable
        if any(at < 0 for at, _ in steps) or [at for at, _ in steps] != sorted(at for at, _ in steps):
            raise ValueError("rate_steps must be (seconds >= 0, kbit/s) pairs in time order")
        if any(rate is not None and rate <= 0 for _, rate in steps):
            raise ValueError("a rate step's kbit/s must be positive (None: no cap)")

    @property
    def is_clean(self) -> bool:
        return not (self.loss or self.burst_loss or self.delay_ms or self.rate_kbps or self.rate_steps)

    def describe(self) -> str:
        parts = []
        if self.loss:
            parts.append(f"{self.loss * 100:g} % loss")
        if self.burst_loss:
            parts.append(f"{self.burst_loss * 100:g} % bursty loss (GE, mean burst {self.mean_burst:g} packets)")
        if self.delay_ms:
            parts.append(f"{self.delay_ms:g} ms delay" + (f" ±{self.jitter_ms:g} ms" if self.jitter_ms else ""))
        if self.rate_kbps:
            parts.append(f"{self.rate_kbps:g} kbit/s cap, {self.queue_ms:g} ms queue")
        for at, rate in self.rate_steps:
            cap = "no cap" if rate is None else f"{rate:g} kbit/s cap, {self.queue_ms:g} ms queue"
            parts.append(f"at {at:g} s {cap}")
        return ", ".join(parts) or "clean"


CLEAN = LinkSpec()


@dataclass(frozen=True)
class Profile:
    """Impairments for every participant's uplink and downlink, with per-role exceptions."""

    name: str
    description: str
    uplink: LinkSpec = CLEAN
    downlink: LinkSpec = CLEAN
    # role -> (uplink, downlink), replacing the defaults for that role
    roles: tuple[tuple[str, LinkSpec, LinkSpec], ...] = field(default=())

    def links_for(self, role: str) -> tuple[LinkSpec, LinkSpec]:
        for name, up, down in self.roles:
            if name == role:
                return up, down
        return self.uplink, self.downlink

    def to_json(self) -> dict:
        from dataclasses import asdict

        return {"name": self.name, "description": self.description, "uplink": asdict(self.uplink),
                "downlink": asdict(self.downlink),
                "roles": {role: {"uplink": asdict(up), "downlink": asdict(down)} for role, up, down in self.roles}}

    @classmethod
    def from_json(cls, data: dict) -> "Profile":
        return cls(name=data["name"], description=data["description"], uplink=LinkSpec(**data["uplink"]),
                   downlink=LinkSpec(**data["downlink"]),
                   roles=tuple((role, LinkSpec(**v["uplink"]), LinkSpec(**v["downlink"]))
                               for role, v in data.get("roles", {}).items()))


def symmetric(name: str, description: str, *, rtt_ms: float = 0.0, **link) -> Profile:
    """The same impairment on every participant's uplink and downlink, RTT split half each way."""
    spec = LinkSpec(delay_ms=rtt_ms / 2, **link)
    return Profile(name, description, uplink=spec, downlink=spec)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("clean", "no impairment (loopback)"),
    symmetric("4g", "2 % random loss, 60 ms RTT, ±20 ms jitter each way", rtt_ms=60, loss=0.02, jitter_ms=20),
    symmetric("bad-wifi", "10 % bursty loss (Gilbert-Elliott, mean burst 3 packets), 100 ms RTT, ±30 ms jitter "
              "each way", rtt_ms=100, burst_loss=0.10, mean_burst=3.0, jitter_ms=30),
    symmetric("loss-30", "30 % random loss, 100 ms RTT", rtt_ms=100, loss=0.30),
    Profile("narrow", "800 kbit/s cap on the patient's uplink (500 ms drop-tail queue); everything else clean",
            roles=(("patient", LinkSpec(rate_kbps=800), CLEAN),)),
)}


# Not run by default: `loss-30` with the loss on one leg only, to see which leg sets the tail
# (both keep the 100 ms RTT). Session 5 used them to find the uplink dominating.
DIAGNOSTIC_PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("loss-30-uplink", "30 % random loss on every uplink only, 100 ms RTT",
            uplink=LinkSpec(delay_ms=50, loss=0.30), downlink=LinkSpec(delay_ms=50)),
    Profile("loss-30-downlink", "30 % random loss on every downlink only, 100 ms RTT",
            uplink=LinkSpec(delay_ms=50), downlink=LinkSpec(delay_ms=50, loss=0.30)),
)}
# Not run by default yet: a subscriber whose downlink is narrower than what it is sent (the
# patient's phone), the case downlink adaptation exists for. Their targets are in docs/BENCHMARKS.md.
PATIENT_PATH = LinkSpec(delay_ms=30)
DOWNLINK_PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("patient-downlink-1m", "the patient's downlink capped at 1 Mbit/s (300 ms drop-tail queue), 60 ms RTT "
            "on the patient's path; everything else clean",
            roles=(("patient", PATIENT_PATH, LinkSpec(delay_ms=30, rate_kbps=1000, queue_ms=300)),)),
    Profile("patient-downlink-step", "the patient's downlink uncapped, then 500 kbit/s (300 ms queue) from 10 s to "
            "30 s after its first packet, then uncapped again; 60 ms RTT on the patient's path (--duration 40)",
            roles=(("patient", PATIENT_PATH,
                    LinkSpec(delay_ms=30, queue_ms=300, rate_steps=((10.0, 500.0), (30.0, None)))),)),
    Profile("patient-cellular", "the patient on a bursty cellular link: 1.5 Mbit/s down, 1 Mbit/s up (400 ms "
            "queues), 2 % bursty loss (mean burst 4 packets), 80 ms RTT, ±20 ms jitter each way",
            roles=(("patient",
                    LinkSpec(delay_ms=40, jitter_ms=20, burst_loss=0.02, mean_burst=4.0, rate_kbps=1000, queue_ms=400),
                    LinkSpec(delay_ms=40, jitter_ms=20, burst_loss=0.02, mean_burst=4.0, rate_kbps=1500,
                             queue_ms=400)),)),
)}
KNOWN_PROFILES: dict[str, Profile] = {**PROFILES, **DIAGNOSTIC_PROFILES, **DOWNLINK_PROFILES}


def parse_profiles(values: list[str]) -> list[Profile]:
    """--profile values (repeatable, each may be a comma list) -> profiles, in order, without repeats."""
    names: list[str] = []
    for value in values:
        for name in (n.strip() for n in value.split(",")):
            if name and name not in names:
                names.append(name)
    unknown = [n for n in names if n not in KNOWN_PROFILES]
    if unknown:
        raise ValueError(f"unknown profile(s) {', '.join(unknown)}; known: {', '.join(KNOWN_PROFILES)}")
    return [KNOWN_PROFILES[n] for n in names]


def derive_seed(*parts: object) -> int:
    """A stable 64-bit seed from any parts (run seed, room, role, direction, stage)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


# --- stages -------------------------------------------------------------------------------------


class BernoulliLoss:
    def __init__(self, p: float, rng: random.Random) -> None:
        self.p = p
        self._rng = rng

    def lost(self) -> bool:
        return self._rng.random() < self.p


class GilbertElliott:
    """Two-state Markov loss, one step per packet.

    Good loses nothing, Bad loses every packet (Gilbert's model). Leaving Bad has
    probability r = 1 / mean_burst, so loss bursts are geometric with that mean;
    entering Bad has p = r * loss / (1 - loss), so the long-run loss rate is `loss`.
    """

    def __init__(self, loss: float, mean_burst: float, rng: random.Random) -> None:
        self.r = 1.0 / mean_burst
        self.p = self.r * loss / (1.0 - loss)
        self.bad = False
        self._rng = rng

    def lost(self) -> bool:
        # the state moves first, then decides this packet
        if self.bad:
            self.bad = self._rng.random() >= self.r
        else:
            self.bad = self._rng.random() < self.p
        return self.bad


class TokenBucketQueue:
    """A bottleneck: FIFO queue of at most `queue_bytes`, served by a token bucket at `rate_bps`.

    Time is given, not read: admit() computes when the packet leaves the
    bottleneck (None: the queue was full, drop-tail). A rate of None is no cap:
    packets still queued from a capped stretch drain first, in order.
    """

    def __init__(self, rate_bps: Optional[float], queue_bytes: int, burst_bytes: int) -> None:
        self.rate = None if rate_bps is None else rate_bps / 8.0  # bytes per second
        self.queue_bytes = queue_bytes
        self.burst = burst_bytes
        self._tokens = float(burst_bytes)
        self._tokens_at = float("-inf")
        self._last_departure = float("-inf")
        self._queue: deque[tuple[float, int]] = deque()  # (departure, size) of packets not yet out
        self._queued = 0
        self.dropped = 0
        self.max_queued = 0

    def queued_bytes(self, now: float) -> int:
        while self._queue and self._queue[0][0] <= now:
            self._queued -= self._queue.popleft()[1]
        return self._queued

    def set_rate(self, now: float, rate_bps: Optional[float], queue_bytes: int) -> None:
        """A new cap from `now` on; the bucket keeps what it had accrued at the old rate."""
        if self.rate is not None and self._tokens_at != float("-inf") and now > self._tokens_at:
            self._tokens = min(self.burst, self._tokens + self.rate * (now - self._tokens_at))
            self._tokens_at = now
        self.rate = None if rate_bps is None else rate_bps / 8.0
        self.queue_bytes = queue_bytes

    def admit(self, now: float, size: int) -> Optional[float]:
        if self.queued_bytes(now) + size > self.queue_bytes:
            self.dropped += 1
            return None
        start = max(now, self._last_departure)
        if self.rate is None:
            departure = start
            self._tokens = float(self.burst)
        else:
            tokens = self.burst if self._tokens_at == float("-inf") else \
                min(self.burst, self._tokens + self.rate * max(0.0, start - self._tokens_at))
            departure = start if tokens >= size else start + (size - tokens) / self.rate
            self._tokens = tokens - size if tokens >= size else 0.0  # a waiting packet spends what accrued
        self._tokens_at = departure
        self._last_departure = departure
        self._queue.append((departure, size))
        self._queued += size
        self.max_queued = max(self.max_queued, self._queued)
        return departure


class DelayJitter:
    def __init__(self, delay_s: float, jitter_s: float, rng: random.Random, reorder: bool = False) -> None:
        self.delay = delay_s
        self.jitter = jitter_s
        self.reorder = reorder
        self._rng = rng
        self._last = float("-inf")

    def exit_time(self, now: float) -> float:
        t = now + self.delay
        if self.jitter:
            t += self._rng.uniform(-self.jitter, self.jitter)
        if not self.reorder:
            t = max(t, self._last)  # FIFO: never overtake the previous packet
        self._last = t
        return t


@dataclass
class LinkCounters:
    packets: int = 0
    lost: int = 0  # by the loss stage
    dropped: int = 0  # by the full bottleneck queue
    delivered: int = 0
    initial_kbps: Optional[float] = None  # the bottleneck's rate before any step (None: uncapped)
    # (monotonic time, kbit/s or None) of each rate step as it took effect
    steps: list[tuple[float, Optional[float]]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"packets": self.packets, "lost": self.lost, "queue_dropped": self.dropped,
                "delivered": self.delivered,
                "loss_ratio": round((self.lost + self.dropped) / self.packets, 4) if self.packets else 0.0,
                "initial_kbps": self.initial_kbps, "steps": [list(step) for step in self.steps]}


class Link:
    """loss -> bottleneck -> delay/jitter, each stage with its own seeded generator."""

    def __init__(self, spec: LinkSpec, seed: int) -> None:
        self.spec = spec
        self.loss: Optional[BernoulliLoss | GilbertElliott] = None
        if spec.loss:
            self.loss = BernoulliLoss(spec.loss, random.Random(derive_seed(seed, "loss")))
        elif spec.burst_loss:
            self.loss = GilbertElliott(spec.burst_loss, spec.mean_burst, random.Random(derive_seed(seed, "ge")))
        self.bottleneck: Optional[TokenBucketQueue] = None
        if spec.rate_kbps or spec.rate_steps:
            rate = spec.rate_kbps * 1000 if spec.rate_kbps else None
            self.bottleneck = TokenBucketQueue(rate, self._queue_bytes(rate),
                                               max(spec.burst_bytes, MAX_PACKET + WIRE_OVERHEAD))
        self._steps = list(spec.rate_steps)
        self._first_packet_at: Optional[float] = None
        self.delay: Optional[DelayJitter] = None
        if spec.delay_ms:
            self.delay = DelayJitter(spec.delay_ms / 1000, spec.jitter_ms / 1000,
                                     random.Random(derive_seed(seed, "jitter")), spec.reorder)
        self.counters = LinkCounters(initial_kbps=spec.rate_kbps or None)

    def admit(self, now: float, size: int) -> Optional[float]:
        """When a packet of `size` wire bytes sent at `now` leaves the link; None if it is lost."""
        self.counters.packets += 1
        if self._first_packet_at is None:
            self._first_packet_at = now
        while self._steps and now - self._first_packet_at >= self._steps[0][0]:
            at, rate_kbps = self._steps.pop(0)
            rate = None if rate_kbps is None else rate_kbps * 1000
            assert self.bottleneck is not None  # made whenever there are steps
            self.bottleneck.set_rate(self._first_packet_at + at, rate, self._queue_bytes(rate))
            self.counters.steps.append((self._first_packet_at + at, rate_kbps))
        if self.loss is not None and self.loss.lost():
            self.counters.lost += 1
            return None
        t = now
        if self.bottleneck is not None:
            out = self.bottleneck.admit(t, size)
            if out is None:
                self.counters.dropped += 1
                return None
            t = out
        if self.delay is not None:
            t = self.delay.exit_time(t)
        self.counters.delivered += 1
        return t

    def _queue_bytes(self, rate_bps: Optional[float]) -> int:
        """`queue_ms` worth of the rate, at least one packet; with no cap, one second at 1 Gbit/s."""
        worth = self.spec.queue_ms / 1000 * (rate_bps if rate_bps is not None else 1e9) / 8
        return max(MAX_PACKET + WIRE_OVERHEAD, int(worth))

