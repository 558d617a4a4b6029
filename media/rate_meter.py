"""Bits per second of a packet flow over the last second or so.

Kept in a ring of short buckets so adding a packet costs a few operations (it
runs per packet on the forwarding path) and reading the rate costs one sum.
"""

from __future__ import annotations

from typing import Optional

BUCKET_S = 0.1
BUCKETS = 10  # a one-second window


class RateMeter:
    def __init__(self, bucket_s: float = BUCKET_S, buckets: int = BUCKETS) -> None:
        self._bucket_s = bucket_s
        self._per_s = 1.0 / bucket_s
        self._size = buckets
        self._bytes = [0] * buckets
        self._newest = 0  # index of the newest bucket, counted from time zero
        self._first: Optional[float] = None  # a young meter's window is only as long as its life

    def _advance(self, index: int) -> None:
        """Make `index` the newest bucket, emptying those it passes over."""
        newest, size = self._newest, self._size
        for k in range(newest + 1, min(index, newest + size) + 1):
            self._bytes[k % size] = 0
        self._newest = index

    def add(self, nbytes: int, now: float) -> None:
        index = int(now * self._per_s)
        if index != self._newest:
            if self._first is None:
                self._first = now
            if index > self._newest:
                self._advance(index)
            elif index <= self._newest - self._size:
                return  # older than the window
        self._bytes[index % self._size] += nbytes

    def bps(self, now: float) -> float:
        """The rate over the window ending now (the current bucket counted in part)."""
        index = int(now * self._per_s)
        if index > self._newest:
            self._advance(index)
        elapsed = (self._size - 1 + (now * self._per_s - index)) * self._bucket_s
        if self._first is not None:
            elapsed = min(elapsed, now - self._first)
        return sum(self._bytes) * 8 / max(elapsed, self._bucket_s)
