"""What a publisher's first packet bursts show its uplink can carry.

A browser starts a call sending little (Chromium: 300 kbit/s) and at once probes: short
bursts of padding, and its first keyframe, paced at several times that rate. An estimate
from arrival delays alone (aiortc's `RemoteBitrateEstimator`) starts at what the browser
sends after 3 s and grows ~8 % a second, so its top simulcast layer began 15-30 s into a
call. Only the receiver can tell whether a burst arrived as fast as it was sent: if it did,
the uplink carries at least that rate. Chromium takes a REMB above its own estimate as it
is during its first seconds, so a REMB from such a burst starts every layer at once.

Bursts are runs of packets sent close together (abs-send-time); a burst counts if it
arrived over no longer than it took to send (arrival times are whole milliseconds,
read after the event loop got to them: a little slack is allowed, and a run read in one
go is taken at its sending pace, never faster). One a narrow uplink spread out is left
to the delay-based estimate: starting the publisher at such a link's own rate filled it
(the load test's cellular profile: the patient's audio to the others 97 -> 88 % in time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

ABS_SEND_TIME_WRAP = 1 << 24  # 6.18 fixed-point seconds
ABS_SEND_TIME_MS = 1000.0 / (1 << 18)
WINDOW_MS = 2000  # bursts in a publisher's first seconds, while its browser still trusts a REMB
MIN_PACKET_BYTES = 200  # audio and padding-sized leftovers are not paced as probes
MIN_BURST_PACKETS = 5
# A longer gap between two sends ends a burst: Chromium's pacer, short of CPU, left 5-6 ms
# gaps inside a probe cluster, and at 5 ms a patient page's only cluster went untimed.
MAX_SEND_GAP_MS = 8.0
MIN_SEND_SPAN_MS = 10.0  # shorter bursts are too short to time with whole-millisecond arrivals
ARRIVAL_SLACK = 1.2  # the arrival span may exceed the sending span by this factor...
ARRIVAL_SLACK_MS = 2.0  # ...plus this: the bursts are 10-20 ms long


@dataclass(frozen=True)
class Burst:
    packets: int
    send_span_ms: float
    arrival_span_ms: float
    bits: int  # after the first packet: what the spans carried

    @property
    def got_through(self) -> bool:
        return self.arrival_span_ms <= self.send_span_ms * ARRIVAL_SLACK + ARRIVAL_SLACK_MS

    @property
    def bps(self) -> int:
        """The rate the uplink carried this burst at (the slower of sending and arriving)."""
        return round(self.bits * 1000 / max(self.send_span_ms, self.arrival_span_ms))


class ProbeBursts:
    """Fed every packet of one publisher's video; `add` returns a rate when a burst that got
    through shows more than any before it, within the first `WINDOW_MS`."""

    def __init__(self) -> None:
        self._first_arrival_ms: Optional[int] = None
        self._last_abs: Optional[int] = None
        self._send_ms = 0.0  # unwrapped send time of the last packet
        self._run: list[tuple[float, int, int]] = []  # (send ms, arrival ms, bytes) of the open burst
        self.best_bps = 0
        self.bursts: list[Burst] = []  # every burst measured, for tests and logs

    @property
    def finished(self) -> bool:
        """Past the window, its last burst judged: nothing more to look at."""
        return self._first_arrival_ms is not None and self._last_abs is None

    def add(self, *, abs_send_time: int, arrival_time_ms: int, size: int) -> Optional[int]:
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_time_ms
        elif arrival_time_ms - self._first_arrival_ms > WINDOW_MS:
            if self._last_abs is None:
                return None
            result = self._close_run()
            self._last_abs = None  # done: nothing more is kept
            return result
        if self._last_abs is not None:
            delta = (abs_send_time - self._last_abs) % ABS_SEND_TIME_WRAP
            if delta >= ABS_SEND_TIME_WRAP // 2:
                return None  # sent before the last one (reordered or retransmitted): not timed
            self._send_ms += delta * ABS_SEND_TIME_MS
        self._last_abs = abs_send_time
        result = None
        if self._run and self._send_ms - self._run[-1][0] > MAX_SEND_GAP_MS:
            result = self._close_run()
        if size >= MIN_PACKET_BYTES:
            self._run.append((self._send_ms, arrival_time_ms, size))
        return result

    def _close_run(self) -> Optional[int]:
        run, self._run = self._run, []
        if len(run) < MIN_BURST_PACKETS:
            return None
        send_span = run[-1][0] - run[0][0]
        arrival_span = max(arrival for _, arrival, _ in run) - run[0][1]
        if send_span < MIN_SEND_SPAN_MS:
            return None
        burst = Burst(packets=len(run), send_span_ms=send_span, arrival_span_ms=float(arrival_span),
                      bits=8 * sum(size for _, _, size in run[1:]))
        self.bursts.append(burst)
        if burst.got_through and burst.bps > self.best_bps:
            self.best_bps = burst.bps
            return burst.bps
        return None
