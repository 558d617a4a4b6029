"""A rate limit per WebSocket, and the rule for when a flood ends the session."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

# One token bucket for the project (the annotation limiter's, which also takes a cost).
from annotate.limits import TokenBucket


class FloodGuard:
    """Drops messages over the rate; a flood that lasts `max_flood_s` is ended.

    An episode starts at the first dropped message and lasts while drops keep
    coming less than `quiet_s` apart, so a client that merely bursts is never cut.
    """

    def __init__(self, rate: float = 50, burst: float = 100, max_flood_s: float = 5.0,
                 quiet_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = TokenBucket(rate, burst, clock)
        self._clock = clock
        self._max_flood_s = max_flood_s
        self._quiet_s = quiet_s
        self._episode_start: Optional[float] = None
        self._last_drop: Optional[float] = None
        self.dropped = 0

    def admit(self) -> tuple[bool, bool, bool]:
        """(admitted, first drop of an episode, flood lasted too long)."""
        if self._bucket.take():
            return True, False, False
        now = self._clock()
        self.dropped += 1
        new_episode = self._last_drop is None or now - self._last_drop > self._quiet_s
        if new_episode:
            self._episode_start = now
        self._last_drop = now
        assert self._episode_start is not None  # the first drop starts an episode
        too_long = now - self._episode_start > self._max_flood_s
        return False, new_episode, too_long
