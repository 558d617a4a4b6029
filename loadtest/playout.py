"""When a browser would show each video frame: libwebrtc's playout timing, simplified.

A browser does not decode a frame the moment it becomes decodable: libwebrtc's
timing module (VCMTiming, fed by video/video_stream_buffer_controller.cc)
schedules each frame at its capture time mapped to local time (a timestamp
extrapolator) plus a target delay = jitter estimate + render delay, and decodes
it then; a frame that becomes decodable after its slot is decoded at once, late.
Three rules of libwebrtc shape the result under loss and are kept here:

- frames delayed by retransmission (a packet of the frame was NACKed by this
  receiver) feed neither the timestamp mapping nor the jitter estimate: the
  target follows the network's jitter, not how long recovery took;
- instead, once NACKLIMIT frames were delayed by retransmission (within
  NACK_COUNT_TIMEOUT_S of each other), the target adds min(RTT_MULT x RTT,
  RTT_MULT_ADD_CAP_S): one retransmission round (WebRTC-RttMult, on by default);
- a frame later than its slot is shown when it becomes decodable.

Freezes and glass-to-glass latency are measured on these times, as Chrome's own
freeze statistics (VideoQualityObserver) are on rendered frames.

The jitter estimate itself is deliberately simple and documented instead of a
copy of libwebrtc's Kalman filter: the PERCENTILE-th percentile of the recent
frames' delay beyond the smallest delay seen (the "relative delay", which is what
a receiver without a synchronised clock can observe), over the last WINDOW frames
not delayed by retransmission. It rises as soon as late frames show up and falls
only as they leave the window. For the same jitter it is more cautious (a later
slot) than libwebrtc's filter, whose noise threshold is ~2.3 standard deviations.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Optional

WINDOW = 300  # frames: 10 s at 30 fps
PERCENTILE = 95
RENDER_DELAY_S = 0.010  # libwebrtc kDefaultRenderDelayMs
MAX_DELAY_S = 10.0  # libwebrtc's upper bound on the playout delay
DEFAULT_RTT_S = 0.100  # libwebrtc kDefaultRtt, before a receiver has measured one
NACK_LIMIT = 3  # libwebrtc JitterEstimator kNackLimit
NACK_COUNT_TIMEOUT_S = 60.0  # kNackCountTimeout: the count restarts after this long without one
RTT_MULT = 0.9  # WebRTC-RttMult defaults (rtc_base/experiments/rtt_mult_experiment.cc)
RTT_MULT_ADD_CAP_S = 0.200


class PlayoutClock:
    def __init__(self, clock_rate: int = 90000, rtt_s: float = DEFAULT_RTT_S, min_delay_s: float = 0.0) -> None:
        self.clock_rate = clock_rate
        self.rtt_s = rtt_s  # the receiver's RTT (libwebrtc uses the call's largest)
        # a floor under the target (VCMTiming's min playout delay), which a page sets
        # with RTCRtpReceiver.jitterBufferTarget
        self.min_delay_s = min_delay_s
        self._last_ts: Optional[int] = None
        self._ts_unwrapped = 0
        self._offset: Optional[float] = None  # smallest (arrival time - capture time) seen
        self._recent: deque[float] = deque()  # relative delays, arrival order
        self._sorted: list[float] = []
        self._jitter_s = 0.0
        self._nacked_frames = 0
        self._last_nacked = float("-inf")
        self._last_render = float("-inf")
        self.frames_delayed_by_retransmission = 0
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

    def _learn(self, raw: float) -> None:
        """A frame that arrived without retransmission: its delay teaches the jitter estimate."""
        if self._offset is None or raw < self._offset:
            self._offset = raw
        relative = raw - self._offset
        self._recent.append(relative)
        bisect.insort(self._sorted, relative)
        if len(self._recent) > WINDOW:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        k = min(len(self._sorted) - 1, int(len(self._sorted) * PERCENTILE / 100))
        self._jitter_s = self._sorted[k]

    def render_time(self, timestamp: int, decodable_at: float, delayed_by_retransmission: bool = False,
                    received_at: Optional[float] = None) -> float:
        """Schedule one frame (in decode order) and return when it is shown.

        `received_at`: when the frame's last packet arrived (default: `decodable_at`). A frame
        complete early but waiting for an older one is timed by its own arrival, as in libwebrtc.
        """
        captured = self._capture_time(timestamp)
        raw = (decodable_at if received_at is None else received_at) - captured
        if delayed_by_retransmission:
            self.frames_delayed_by_retransmission += 1
            if decodable_at - self._last_nacked > NACK_COUNT_TIMEOUT_S:
                self._nacked_frames = 0
            self._nacked_frames += 1
            self._last_nacked = decodable_at
            if self._offset is None:
                self._offset = raw  # nothing better yet; the first clean frame corrects it
        else:
            self._learn(raw)
        rtt_add = min(RTT_MULT * self.rtt_s, RTT_MULT_ADD_CAP_S) if self._nacked_frames >= NACK_LIMIT else 0.0
        self.target_s = min(MAX_DELAY_S, max(self.min_delay_s, self._jitter_s + rtt_add + RENDER_DELAY_S))
        assert self._offset is not None  # set by _learn or by the retransmission branch above
        due = captured + self._offset + self.target_s
        shown = max(decodable_at, due, self._last_render)
        self._last_render = shown
        return shown


# --- the viewer pages' policy ------------------------------------------------------------------------
# static/js/playout-policy.js sets RTCRtpReceiver.jitterBufferTarget on each remote video
# from the browser's own freeze statistics; this is the same policy for the load test's
# browser-like receivers. The constants and rules must match that file.
POLICY_INTERVAL_S = 1.0  # how often the page reads getStats
POLICY_WINDOW_S = 5.0
# More delay when frames froze for this share of the last window: at 30 % loss most frames
# wait for a retransmission round and a browser's own target (jitter of frames that did
# not, plus one RTT) leaves the picture stopping and starting.
RAISE_FROZEN_SHARE = 0.02
RAISE_HOLD_S = 1.0  # let a raise show its effect (freezes seen with it) before the next one
CALM_S = 20.0  # no freeze for this long: step back down, latency matters too
STEP_S = 0.150
# Never more: the checklist's 600 ms glass-to-glass minus path, capture and encode.
CAP_S = 0.450


class PagePlayoutPolicy:
    """Raise a video receiver's playout floor while it freezes, lower it after a calm spell."""

    def __init__(self) -> None:
        self.target_s = 0.0  # 0: the browser's own target
        self._frozen: deque[tuple[float, float]] = deque()  # (when reported, frozen seconds)
        self._changed_at = float("-inf")
        self._last_frozen_at = float("-inf")

    def update(self, now: float, frozen_s: float) -> float:
        """One getStats reading: `frozen_s` of freezes ended since the last one. Returns the target."""
        if frozen_s > 0:
            self._frozen.append((now, frozen_s))
            self._last_frozen_at = now
        while self._frozen and now - self._frozen[0][0] > POLICY_WINDOW_S:
            self._frozen.popleft()
        frozen = sum(s for _, s in self._frozen)
        if (frozen >= RAISE_FROZEN_SHARE * POLICY_WINDOW_S and self.target_s < CAP_S
                and now - self._changed_at >= RAISE_HOLD_S):
            self.target_s = min(CAP_S, round(self.target_s + STEP_S, 6))
            self._changed_at = now
            self._frozen.clear()  # the next raise needs freezes seen with this floor
        elif self.target_s > 0 and now - self._last_frozen_at >= CALM_S and now - self._changed_at >= CALM_S:
            self.target_s = max(0.0, round(self.target_s - STEP_S, 6))
            self._changed_at = now
        return self.target_s
