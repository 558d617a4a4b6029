"""The REMB for one publisher's video: the delay-based estimate, started by its probe bursts.

aiortc's `RemoteBitrateEstimator` (arrival delays, AIMD) gives no estimate for its first
3 s and then starts from what arrives; a burst from `media/uplink_probes.py` that arrived
faster sets it higher at once, and is sent at once (the browser trusts it only early on).
"""

from __future__ import annotations

import logging
from typing import Optional

from aiortc.rate import RemoteBitrateEstimator

from .uplink_probes import ProbeBursts

logger = logging.getLogger(__name__)


class UplinkEstimator:
    def __init__(self, name: str = "") -> None:
        self.name = name  # whose uplink, for the log
        self._delay_based = RemoteBitrateEstimator()
        self._probes: Optional[ProbeBursts] = ProbeBursts()
        self.estimate: Optional[int] = None  # bit/s
        self.probed_bps = 0  # the best burst's rate (0: none got through)

    def add(self, *, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int) -> Optional[int]:
        """Returns a new estimate to send the publisher now, else None."""
        probed = None
        if self._probes is not None:
            probed = self._probes.add(abs_send_time=abs_send_time, arrival_time_ms=arrival_time_ms, size=payload_size)
            if self._probes.finished:
                if not self.probed_bps:  # the browser's start stays slow: say what was seen
                    logger.info("%s: no uplink probe burst timed in the first seconds: %s", self.name,
                                ", ".join(f"{b.packets} packets sent in {b.send_span_ms:.0f} ms arrived in "
                                          f"{b.arrival_span_ms:.0f} ms" for b in self._probes.bursts) or "no burst")
                self._probes = None  # no per-packet work for it past a publisher's first seconds
        remb = self._delay_based.add(arrival_time_ms=arrival_time_ms, abs_send_time=abs_send_time,
                                     payload_size=payload_size, ssrc=ssrc)
        if probed is not None and (self.estimate is None or probed > self.estimate):
            self.probed_bps = probed
            logger.info("%s: an uplink probe burst arrived at %d kbit/s: the estimate starts there", self.name,
                        probed // 1000)
            self._delay_based.rate_control.set_estimate(probed, arrival_time_ms)
            self.estimate = probed
            return probed
        if remb is not None:
            self.estimate = remb[0]
            return remb[0]
        return None
