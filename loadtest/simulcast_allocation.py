"""Which simulcast layers a publisher sends: its bandwidth target given to the layers lowest first.

Chrome (libwebrtc SimulcastRateAllocator) gives its target bitrate to the layers from
the lowest up; a layer the rest of the target does not cover is not encoded (the lowest
one always is), and comes back, with a keyframe, when it fits. Every layer the target
covers is on at once: when the target jumps (a REMB after the initial probes,
loadtest.initial_probes), all the layers that now fit start together, each on a keyframe
(libvpx's simulcast encoder keys a stream that starts), not one per REMB. The target is the
smaller of the receiver's estimate (REMB) and GoogCC's loss-based one (x (1 - loss / 2)
above 10 % loss, +8 % per report under 2 %), from libwebrtc's start bitrate (300 kbit/s)
until the first REMB. A REMB above the target is taken as it is: Chrome does so in its
first 2 s (SendSideBandwidthEstimation's start phase, while no loss is reported), which
is when the REMB from our server's probe bursts comes; later Chrome's own estimate climbs
~8 %/s under the REMB, as the server's REMB itself does then, so the REMB stands for both.

The layers here are fixed-rate encodings of a clip. Chrome's encoder would send the top
layer it turns on below that layer's full rate, and the server's estimate (aiortc's
AIMD: at most 1.5 x what arrives, +8 %/s) only grows with what is sent; so, as the
single-stream publisher (loadtest.publisher) does with its ladder, the next layer is
*probed*: turned on when the target shows headroom over what is sent. It stays while
the estimate climbs toward it; the estimator cutting its estimate (over-use: more than
10 % below its peak), or not reaching it within PROBE_MAX_S, turns it off again, and it
is tried again after a back-off that doubles each time it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from loadtest.publisher import MAX_PROBE_BACKOFF_S, OVERUSE_SHARE, PROBE_BACKOFF_S, TARGET_SHARE

START_BITRATE = 300_000  # libwebrtc's default start bitrate, bit/s
# The estimate climbs ~8 %/s: from headroom (1/TARGET_SHARE of what is sent) to a layer
# 2-3x above what is sent takes ~10-15 s on a clean link.
PROBE_MAX_S = 20.0
CUT_SHARE = 0.9  # the estimate this far below its peak since the last switch: the estimator saw over-use


def layers_that_fit(target: float, rates: Sequence[float]) -> int:
    """How many layers, lowest first, `target` covers at their full rates; at least the lowest one."""
    total, count = 0.0, 0
    for rate in rates:
        total += rate
        if total > target:
            break
        count += 1
    return max(1, count)


class LayerAllocator:
    """The number of layers (lowest first) sent, following REMB and receiver-report loss."""

    def __init__(self, rates: Sequence[float], start_bitrate: float = START_BITRATE) -> None:
        if not rates:
            raise ValueError("no layers")
        self.rates = list(rates)  # bit/s each layer sends, lowest first
        self.remb: Optional[float] = None
        self.loss_based = float("inf")
        self.start_bitrate = start_bitrate
        self.active = layers_that_fit(start_bitrate, self.rates)
        self.switches = 0
        self.probes = self.probes_failed = 0
        self._probing = False
        self._switched_at = float("-inf")
        self._peak = 0.0
        self._retry_at: dict[int, float] = {}  # layer index -> when it may be probed again
        self._backoff_s: dict[int, float] = {}

    @property
    def target(self) -> float:
        return min(self.loss_based, self.remb if self.remb is not None else self.start_bitrate)

    @property
    def sent_rate(self) -> float:
        return sum(self.rates[:self.active])

    def on_remb(self, bitrate: float, now: float) -> int:
        self.remb = bitrate
        return self.update(now)

    def on_loss(self, fraction_lost: float, now: float) -> int:
        """GoogCC's loss-based limit from the loss over the layers sent (a cut, then +8 % per clean report)."""
        if fraction_lost > 0.10:
            self.loss_based = self.sent_rate * (1 - fraction_lost / 2)
        elif fraction_lost < 0.02:
            self.loss_based *= 1.08
        return self.update(now)

    def update(self, now: float) -> int:
        target = self.target
        self._peak = max(self._peak, target)
        sent = self.sent_rate
        fit = layers_that_fit(target, self.rates)
        if self._probing and target >= sent * OVERUSE_SHARE:
            self._probing = False  # the estimate reached the layer turned on: it fits
            self._backoff_s.pop(self.active - 1, None)
        if self._probing:
            cut = target < self._peak * CUT_SHARE
            if cut or now - self._switched_at > PROBE_MAX_S:
                self.probes_failed += 1
                self._drop_to(min(fit, self.active - 1), now)
        elif fit < self.active and target < sent * OVERUSE_SHARE:
            self._drop_to(fit, now)
        elif self.active < len(self.rates) and now >= self._retry_at.get(self.active, 0.0):
            if fit > self.active:  # they fit already: every one that fits and is not backing off, at once
                count = self.active + 1
                while count < fit and now >= self._retry_at.get(count, 0.0):
                    count += 1
                self._set(count, now)
            elif target * TARGET_SHARE >= sent:
                self.probes += 1
                self._set(self.active + 1, now)
                self._probing = True
        return self.active

    def _drop_to(self, count: int, now: float) -> None:
        for layer in range(count, self.active):
            backoff = self._backoff_s.get(layer, PROBE_BACKOFF_S)
            self._retry_at[layer] = now + backoff
            self._backoff_s[layer] = min(backoff * 2, MAX_PROBE_BACKOFF_S)
        self._set(count, now)

    def _set(self, count: int, now: float) -> None:
        self.active = count
        self.switches += 1
        self._probing = False
        self._switched_at, self._peak = now, 0.0
