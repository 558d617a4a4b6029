"""How many copies of a recovery message to send over a link that loses a fraction of packets.

A NACK or a retransmission lost on a 30 %-loss link costs a whole retry interval
(half an RTT to an RTT) before anyone asks again, and the latency budget holds
only a few of those. Sending a small message k times, a few milliseconds apart,
makes it arrive with probability 1 - p^k for the price of k - 1 extra small
packets; only recovery traffic is duplicated, never media, so the cost scales
with the loss itself and a clean link pays nothing. Loss measured on the link is
the input, so a link that recovers goes back to single copies on its own.
"""

from __future__ import annotations

# Send copies until the chance that every one is lost falls below this.
RESIDUAL_LOSS = 0.05
# Audio aims lower: a lost audio packet is a gap in the sound (no retransmission reaches its
# playout deadline), and a copy costs ~100 bytes. At 30 % loss the 5 % aim gave 2 or 3
# copies as the estimate wandered around 22 %; this keeps 3 from 14 % up.
AUDIO_RESIDUAL_LOSS = 0.02
MAX_COPIES = 3
# Spacing between copies: wider than a typical loss burst of one or two packets,
# far below the retry interval.
COPY_SPACING_S = 0.008
# Weight of a new loss sample in the running estimate (per packet or per report).
EWMA_WEIGHT = 0.02


def copies_for_loss(loss: float, residual: float = RESIDUAL_LOSS, max_copies: int = MAX_COPIES) -> int:
    """Fewest copies k with loss**k <= residual, between 1 and max_copies."""
    if not 0.0 < loss < 1.0:
        return 1 if loss <= 0.0 else max_copies
    copies, remaining = 1, loss
    while remaining > residual and copies < max_copies:
        copies += 1
        remaining *= loss
    return copies


class LossEstimate:
    """Running loss fraction of one link, fed with (lost, total) samples."""

    def __init__(self, weight: float = EWMA_WEIGHT) -> None:
        self.weight = weight
        self.value = 0.0
        self.copies = 1  # kept with the value: read per packet, changed per sample
        self.audio_copies = 1

    def add(self, lost: int, total: int) -> None:
        if total <= 0:
            return
        # one sample per packet, so a burst of n packets moves the estimate as n arrivals would
        keep = (1.0 - self.weight) ** total
        self.value = self.value * keep + (lost / total) * (1.0 - keep)
        self.copies = copies_for_loss(self.value)
        self.audio_copies = copies_for_loss(self.value, AUDIO_RESIDUAL_LOSS)

    def reset(self) -> None:
        self.value = 0.0
        self.copies = self.audio_copies = 1
