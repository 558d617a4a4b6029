"""Which lost packets to ask the publisher for again, and when to stop asking.

aiortc NACKs each gap once and never again; at 30 % loss a third of those NACKs
or their retransmissions are lost too. Here a gap is NACKed as soon as it is
seen, then again every quarter RTT (measured on the same transport) until the packet
arrives, until it could no longer arrive in time to be useful (the deadline),
or until the try budget is spent. Packets given up are reported so the keyframe
policy can repair the picture instead.

Retries stop while a publisher answers none of them: one whose history is shorter
than our deadline (aiortc keeps 128 packets), or that ignores NACKs, was sent a
NACK every quarter RTT for each gap, for nothing (hundreds of thousands on a server
short of CPU, whose own socket dropped the packets). Each new gap is still asked for
once, so answers coming back resume the retries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .redundancy import LossEstimate
from .seqnum import seq_add, seq_diff

# Gaps wider than this are a stream restart or a reordering storm, not loss worth NACKing.
MAX_GAP = 256
MAX_TRACKED = 512
# Re-ask every quarter RTT. A libwebrtc sender resends a packet on its first NACK
# and then ignores NACKs for it until an RTT after that resend, by its own RTT
# estimate, which differs from ours by processing and scheduling delays: retries
# on a quarter-RTT grid reach it at most a quarter RTT after it would resend
# again, whatever the difference. (Half-RTT retries missed that moment by up to
# half an RTT; rounds aimed just past one RTT were refused when the sender's
# estimate ran higher, and lost a whole round.) The early retries also cover a
# NACK whose copies were all lost. NACKs are small; max_tries allows for four per RTT.
RETRY_RTT_FRACTION = 0.25
# Give up (and ask for a keyframe) this long after a gap was seen. Late, because at
# high loss a retransmission round (~1 RTT, p = 0.68 at 30 % loss) keeps beating a
# keyframe (tens of packets, each as lossy): at 0.4 s, with browsers resending a
# packet at most once per RTT, publishers were asked for ~4 keyframes a second.
VIDEO_DEADLINE_S = 1.0
# Audio retransmitted later than this misses any playout buffer.
AUDIO_DEADLINE_S = 0.4
# Sequence numbers per uplink-loss sample.
LOSS_SAMPLE_PACKETS = 50
# The fates (arrived, given up) of this many gaps asked for tell whether the publisher answers.
ANSWER_WINDOW = 16


@dataclass(slots=True)
class _Missing:
    detected_at: float
    last_nack_at: float
    tries: int


class NackGenerator:
    def __init__(self, *, deadline_s: float = VIDEO_DEADLINE_S, max_tries: int = 40, min_retry_s: float = 0.02) -> None:
        self.deadline_s = deadline_s
        self.max_tries = max_tries
        self.min_retry_s = min_retry_s
        self._max_seq: int | None = None
        self._missing: dict[int, _Missing] = {}
        self.nacked = 0
        self.recovered = 0
        self.given_up = 0
        self.not_media = 0  # gaps found to be FEC, dropped from the list
        # first-transmission loss on the uplink: how many copies each NACK needs
        self.loss = LossEstimate()
        self._sample_lost = self._sample_total = 0
        self.last_was_recovered = False  # the packet just seen filled a gap (arrives late)
        # the packet just seen had arrived already (or is older than anything still asked for)
        self.last_was_duplicate = False
        self._fates: deque[bool] = deque(maxlen=ANSWER_WINDOW)  # per gap asked for: did it arrive
        self._arrived_in_window = 0
        self.retries_withheld = 0

    @property
    def unanswered(self) -> bool:
        """None of the last ANSWER_WINDOW gaps asked for arrived: the publisher cannot resend."""
        return len(self._fates) == ANSWER_WINDOW and self._arrived_in_window == 0

    def _fate(self, arrived: bool) -> None:
        if len(self._fates) == ANSWER_WINDOW and self._fates[0]:
            self._arrived_in_window -= 1
        self._fates.append(arrived)
        self._arrived_in_window += arrived

    @property
    def missing(self) -> list[int]:
        return sorted(self._missing, key=lambda s: seq_diff(s, self._max_seq or 0))

    def is_missing(self, seq: int) -> bool:
        return seq in self._missing

    def forget(self, seqs: Iterable[int]) -> None:
        """Stop asking for these: they turned out to be no media (FEC a sender never resends)."""
        for seq in seqs:
            if self._missing.pop(seq, None) is not None:
                self.not_media += 1

    def wants(self, seq: int) -> bool:
        """Whether `seq` has not arrived: missing, or newer than anything seen."""
        return self._max_seq is None or seq in self._missing or seq_diff(seq, self._max_seq) > 0

    def on_packet(self, seq: int, now: float) -> list[int]:
        """Record an arrival; returns the newly detected gaps (to NACK immediately)."""
        if self._max_seq is None:
            self._max_seq = seq
            return []
        ahead = seq_diff(seq, self._max_seq)
        self.last_was_recovered = self.last_was_duplicate = False
        if ahead <= 0:
            if self._missing.pop(seq, None) is not None:
                self.recovered += 1
                self.last_was_recovered = True
                self._fate(True)
            else:
                # within the window we track; anything older passes as before (a sender's restart)
                self.last_was_duplicate = ahead > -MAX_GAP
            return []
        self._max_seq = seq
        if ahead > MAX_GAP:
            self._missing.clear()  # a jump, not a gap: start over
            return []
        self._sample_lost += ahead - 1
        self._sample_total += ahead
        if self._sample_total >= LOSS_SAMPLE_PACKETS:  # batched: the estimate is not per-packet work
            self.loss.add(self._sample_lost, self._sample_total)
            self._sample_lost = self._sample_total = 0
        new = [seq_add(seq, -i) for i in range(ahead - 1, 0, -1)]
        for lost in new:
            self._missing[lost] = _Missing(detected_at=now, last_nack_at=now, tries=1)
        self.nacked += len(new)
        if len(self._missing) > MAX_TRACKED:
            for old in self.missing[: len(self._missing) - MAX_TRACKED]:
                del self._missing[old]
        return new

    def due(self, now: float, rtt_s: float) -> tuple[list[int], list[int]]:
        """(sequence numbers to NACK again now, sequence numbers given up)."""
        retry_after = max(self.min_retry_s, rtt_s * RETRY_RTT_FRACTION)
        retry: list[int] = []
        gave_up: list[int] = []
        for seq, entry in list(self._missing.items()):
            expires = entry.detected_at + self.deadline_s
            if now >= expires:
                del self._missing[seq]
                gave_up.append(seq)
                self._fate(False)
            elif (now - entry.last_nack_at >= retry_after and entry.tries < self.max_tries
                  and now + rtt_s < expires):  # an answer to this NACK could still be in time
                entry.last_nack_at = now  # (withheld or not: the next is due a retry interval on)
                entry.tries += 1
                retry.append(seq)
        if retry and self.unanswered:
            self.retries_withheld += len(retry)
            retry = []
        self.nacked += len(retry)
        self.given_up += len(gave_up)
        return retry, gave_up

    def next_wakeup(self, now: float, rtt_s: float) -> float | None:
        """Seconds until due() has something to do, or None when nothing is missing."""
        if not self._missing:
            return None
        retry_after = max(self.min_retry_s, rtt_s * RETRY_RTT_FRACTION)
        soonest = min(
            min(e.last_nack_at + retry_after, e.detected_at + self.deadline_s) if e.tries < self.max_tries
            else e.detected_at + self.deadline_s
            for e in self._missing.values()
        )
        return max(0.0, soonest - now)
