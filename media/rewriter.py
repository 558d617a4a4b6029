"""Maps a source stream's sequence numbers and timestamps onto a down-track.

A subscriber must see one continuous stream on its SSRC even when the source
changes (a slot is reused by another publisher) or when we start it mid-stream
at a keyframe. Losses upstream stay visible as gaps, so the subscriber NACKs them.

Packets of our own (FEC) may take sequence numbers between source packets: each
`reserve` shifts the mapping of every later source packet, and a source packet
arriving late (recovered upstream) is mapped with the shift in force when its
successors were sent, so it fills the gap the subscriber is waiting on. The
publisher's own FEC is the opposite case: numbers in the source that carry no
media for the subscriber. `skip` closes them up, so the subscriber sees no hole
to NACK, and a packet ever claiming one of them is not sent.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Optional

from .seqnum import SEQ_MOD, TS_MOD, seq_add, seq_diff, ts_add

# Reservations and skips remembered for late packets: one of each per frame at most,
# so ~8 s of frames at 30 fps, far past any recovery.
MAX_RESERVATIONS = 512
# A longer run of source numbers is not skipped: FEC for one frame is shorter.
MAX_SKIP = 64


class StreamRewriter:
    def __init__(self, clock_rate: int, rng: Optional[random.Random] = None) -> None:
        rng = rng or random.Random()
        self.clock_rate = clock_rate
        # Start low in the sequence space, as browsers do, to keep SRTP's
        # rollover-counter guess away from a wrap on the first packets.
        self._last_seq = rng.randrange(SEQ_MOD // 2)
        self._last_ts = rng.randrange(TS_MOD)
        self._last_out_time: Optional[float] = None
        self._seq_offset = 0
        self._ts_offset = 0
        # Source sequence numbers extended past 16 bits (counting wraps): "before the start
        # point" must stay decidable however long the stream runs. A 16-bit comparison with
        # the start flips sign 32768 packets later (3.6 min of 720p video), and every packet
        # after that would be dropped.
        self._source_start_ext: Optional[int] = None
        self._source_max_ext: Optional[int] = None
        self._source_max_seq = 0
        # (newest source packet before a reservation or skip, the offset that applied up to
        # it, the last source number skipped: equal to the first for a reservation)
        self._reservations: deque[tuple[int, int, int]] = deque()
        self._forgotten_up_to: Optional[int] = None  # late packets at or before this can no longer be placed

    @property
    def started(self) -> bool:
        return self._source_start_ext is not None

    def switch_source(self, first_seq: int, first_ts: int, now: Optional[float] = None) -> None:
        """Begin mapping a (new) source whose first forwarded packet has these numbers."""
        now = time.monotonic() if now is None else now
        elapsed_units = 1
        if self._last_out_time is not None:
            elapsed_units = max(1, int((now - self._last_out_time) * self.clock_rate))
        self._seq_offset = (seq_add(self._last_seq, 1) - first_seq) % SEQ_MOD
        self._ts_offset = (ts_add(self._last_ts, elapsed_units) - first_ts) % TS_MOD
        # the newest so far is the one before the first: mapping the first then records it as sent
        self._source_start_ext = first_seq
        self._source_max_ext = first_seq - 1
        self._source_max_seq = (first_seq - 1) % SEQ_MOD
        self._reservations.clear()
        self._forgotten_up_to = None

    def reset(self) -> None:
        """Forget the current source (the slot went idle); keeps continuity numbers."""
        self._source_start_ext = None
        self._source_max_ext = None

    def map(self, seq: int, ts: int, now: Optional[float] = None) -> Optional[tuple[int, int]]:
        """Down-track (seq, ts) for a source packet, or None if it precedes the start point."""
        start_ext = self._source_start_ext
        if start_ext is None or self._source_max_ext is None:  # set and cleared together
            return None
        ext = self._source_max_ext + seq_diff(seq, self._source_max_seq)
        if ext < start_ext:
            return None
        offset = self._seq_offset
        if ext <= self._source_max_ext and self._reservations:
            if self._forgotten_up_to is not None and ext <= self._forgotten_up_to:
                return None
            for boundary, before, skipped_to in reversed(self._reservations):
                if ext > boundary:
                    if ext <= skipped_to:
                        return None  # a number skipped as no media: its sequence number is taken
                    break
                offset = before
        out_seq = (seq + offset) % SEQ_MOD
        out_ts = (ts + self._ts_offset) % TS_MOD
        if ext > self._source_max_ext:
            self._source_max_ext, self._source_max_seq = ext, seq
            self._last_seq = out_seq
            self._last_ts = out_ts
            self._last_out_time = time.monotonic() if now is None else now
        return out_seq, out_ts

    @property
    def last_timestamp(self) -> int:
        return self._last_ts

    @property
    def last_sequence_number(self) -> int:
        """The newest sequence number sent on the down-track (a source packet's or a reserved one)."""
        return self._last_seq

    def reserve(self, count: int) -> int:
        """Take `count` sequence numbers right after the newest one sent; returns the first."""
        if self._source_max_ext is None:
            raise RuntimeError("no source to number after")
        first = seq_add(self._last_seq, 1)
        self._remember(self._source_max_ext)
        self._seq_offset = (self._seq_offset + count) % SEQ_MOD
        self._last_seq = seq_add(self._last_seq, count)
        return first

    def skip(self, after_seq: int, upto_seq: int) -> bool:
        """Source numbers after `after_seq` up to `upto_seq` carry no media (the publisher's
        FEC): number the next source packet right after the newest one sent. Done only if
        the newest source packet mapped is `after_seq` or one of those numbers (else a packet
        between may be media that has not arrived); returns whether it was."""
        if self._source_max_ext is None:
            return False
        span = seq_diff(upto_seq, after_seq)
        done = seq_diff(self._source_max_seq, after_seq)  # how far the skipping got already
        if not 0 < span <= MAX_SKIP or not 0 <= done < span:
            return False
        gap = span - done
        ext = self._source_max_ext + gap
        last = self._reservations[-1] if self._reservations else None
        if last is not None and last[2] == self._source_max_ext and last[2] > last[0]:
            self._reservations[-1] = (last[0], last[1], ext)  # the same run of FEC, one more
        else:
            self._remember(ext)
        self._seq_offset = (self._seq_offset - gap) % SEQ_MOD
        self._source_max_ext, self._source_max_seq = ext, upto_seq
        return True

    def _remember(self, skipped_to: int) -> None:
        """Keep the mapping in force up to the newest source packet, for late ones."""
        newest_ext = self._source_max_ext
        assert newest_ext is not None  # callers number after a source packet
        if len(self._reservations) == MAX_RESERVATIONS:
            self._forgotten_up_to = self._reservations.popleft()[0]
        self._reservations.append((newest_ext, self._seq_offset, skipped_to))

    def map_timestamp(self, ts: int) -> int:
        """Source RTP timestamp in down-track units (for sender reports)."""
        return (ts + self._ts_offset) % TS_MOD
