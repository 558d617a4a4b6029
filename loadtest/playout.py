"""When a browser would show each video frame: a playout delay that follows the network's jitter.

A browser does not show a frame the moment it becomes decodable: libwebrtc's
timing module schedules each frame at its capture time (from the RTP timestamp)
plus a target delay, and its jitter estimator raises that delay until frames
usually arrive before their slot (the target also grows by an RTT once NACKs are
in use). Frames therefore come out evenly spaced at the cost of latency, and
only a frame later than its slot makes the picture stop. Freezes and
glass-to-glass latency are measured on these render times, as Chrome's own
freeze statistics (VideoQualityObserver) are.

The estimator here is deliberately simple and documented instead of a copy of
libwebrtc's Kalman filter: the target is the PERCENTILE-th percentile of the
recent frames' delay beyond the smallest delay seen (the "relative delay",
which is what a receiver without a synchronised clock can observe), over the
last WINDOW frames, plus RENDER_DELAY_S. It rises as soon as late frames show
up and falls only as they leave the window, like libwebrtc's.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Optional

WINDOW = 300  # frames: 10 s at 30 fps
PERCENTILE = 95
RENDER_DELAY_S = 0.010  # libwebrtc kDefaultRenderDelayMs
MAX_DELAY_S = 10.0  # libwebrtc's upper bound on the playout delay


class PlayoutClock:
    def __init__(self, clock_rate: int = 90000) -> None:
        self.clock_rate = clock_rate
        self._last_ts: Optional[int] = None
        self._ts_unwrapped = 0
        self._offset: Optional[float] = None  # smallest (decodable time - capture time) seen
        self._recent: deque[float] = deque()  # relative delays, arrival order
        self._sorted: list[float] = []
        self._last_render = float("-inf")
        self.target_s = RENDER_DELAY_S

    def _capture_time(self, timestamp: int) -> float:
        if self._last_ts is None:
            self._ts_unwrapped = timestamp
        else:
            step = (timestamp - self._last_ts) & 0xFFFFFFFF
            if step >= 0x80000000:
                step -= 0x100000000
            self._ts_unwrapped += step
        self._last_ts = timestamp
        return self._ts_unwrapped / self.clock_rate

    def render_time(self, timestamp: int, decodable_at: float) -> float:
        """Schedule one frame (in decode order) and return when it is shown."""
        captured = self._capture_time(timestamp)
        raw = decodable_at - captured
        if self._offset is None or raw < self._offset:
            self._offset = raw
        relative = raw - self._offset
        self._recent.append(relative)
        bisect.insort(self._sorted, relative)
        if len(self._recent) > WINDOW:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        k = min(len(self._sorted) - 1, int(len(self._sorted) * PERCENTILE / 100))
        self.target_s = min(MAX_DELAY_S, self._sorted[k] + RENDER_DELAY_S)
        due = captured + self._offset + self.target_s
        shown = max(decodable_at, due, self._last_render)
        self._last_render = shown
        return shown
