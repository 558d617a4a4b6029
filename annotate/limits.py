"""Size limits of an annotation board, and the per-author flood limiter.

The limits keep one board's snapshot (sent to every late joiner) small and its
messages under the WebSocket's 64 KiB frame limit; see the sizes noted below.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# A maximum-size stroke with 5-decimal numbers is at most ~48 KB of JSON (face-anchored,
# [t, u, v] per point), under the 64 KiB frame limit.
MAX_POINTS_PER_STROKE = 2000
MAX_SHAPES_PER_BOARD = 500
# Bounds the snapshot a late joiner receives to ~0.5 MB however the points are spread.
MAX_POINTS_PER_BOARD = 20_000
MAX_TEXT_CHARS = 200
MAX_REF_CHARS = 64
MAX_AUTHOR_CHARS = 128

# Stroke width in reference pixels (at a 720-pixel-high frame; see render.py).
MIN_WIDTH = 1.0
MAX_WIDTH = 32.0
DEFAULT_WIDTH = 4.0

# Decimals kept of normalised coordinates and barycentric weights: 1e-5 of a 4K
# frame is 0.04 px, and shorter numbers keep strokes under the frame limit.
COORD_DECIMALS = 5

# Triangles in MediaPipe's face-mesh tesselation (annotate/anchoring.py derives them
# and checks this count), so validating a face anchor never imports mediapipe.
FACE_TRIANGLE_COUNT = 852
# How far outside its triangle a face-anchored point may lie, as the most negative
# barycentric weight allowed: -1.5 is one and a half triangle heights beyond an edge.
# Further out, landmark jitter would be magnified too much to follow the face.
MAX_EXTRAPOLATION = 1.5

# Per author: a sustained 8 operations a second, bursts of 30. An added shape costs
# 1 + points // 250, so a maximum-size stroke costs 9: drawing by hand never gets near
# the limit, a script flooding the room does.
RATE_PER_S = 8.0
BURST = 30.0
POINTS_PER_TOKEN = 250


def operation_cost(points: int) -> float:
    return 1.0 + points // POINTS_PER_TOKEN


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._clock = clock
        self._updated = clock()

    def take(self, cost: float = 1.0) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class AuthorRateLimiter:
    """One token bucket per author: one participant's flood never limits another."""

    def __init__(self, rate: float = RATE_PER_S, burst: float = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, author: str, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(author)
        if bucket is None:
            bucket = self._buckets[author] = TokenBucket(self._rate, self._burst, self._clock)
        return bucket.take(cost)
