"""Releases one subscriber's packets no faster than its downlink takes them, audio first.

Idle (no rate set) it costs one comparison per packet: every packet goes at once,
as before. Once the downlink has shown itself narrow (media/send_budget.py sets a
rate), packets beyond the rate wait here rather than in the bottleneck's queue,
where audio would wait behind them: a 720p keyframe is half a second of a
1 Mbit/s link. Here audio goes first, then video, then recovery traffic, and a
packet that waited past its use is dropped (recovery soon, video late). Audio is
never held: it only uses up rate the others would have had.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Optional

from aiortc.rtcdtlstransport import RTCDtlsTransport

logger = logging.getLogger(__name__)

AUDIO, VIDEO, RECOVERY = 0, 1, 2
CLASSES = (AUDIO, VIDEO, RECOVERY)
# How often queued packets are released, and how far ahead of the rate a burst may run.
TICK_S = 0.005
BURST_S = 0.02
MIN_BURST_BYTES = 2500  # two full packets: a rate below a packet per tick still moves
# What waiting longer than this is worth: a retransmission arrives after the subscriber's next
# NACK anyway; a video packet this late freezes the picture whether it goes or not.
MAX_WAIT_S = {AUDIO: 0.0, VIDEO: 1.5, RECOVERY: 0.25}


class Pacer:
    def __init__(self, stamp: Callable[[bytes], bytes] = lambda data: data) -> None:
        """`stamp`: what a packet gets as it leaves (its transport-wide number)."""
        self.rate_bps: Optional[float] = None  # None: not pacing
        self._stamp = stamp
        self._tokens = 0.0
        self._tokens_at = 0.0
        # per class: (queued at, transport, packet)
        self._queues: tuple[deque[tuple[float, RTCDtlsTransport, bytes]], ...] = tuple(deque() for _ in CLASSES)
        self._task: Optional[asyncio.Task] = None
        self.queued = 0
        self.expired = [0, 0, 0]

    def set_rate(self, rate_bps: Optional[float], now: float) -> None:
        if rate_bps is not None and self.rate_bps is None:
            self._tokens, self._tokens_at = self._burst(rate_bps), now
        self.rate_bps = rate_bps

    @staticmethod
    def _burst(rate_bps: float) -> float:
        return max(MIN_BURST_BYTES, rate_bps / 8 * BURST_S)

    def _refill(self, rate_bps: float, now: float) -> None:
        self._tokens = min(self._burst(rate_bps), self._tokens + rate_bps / 8 * max(0.0, now - self._tokens_at))
        self._tokens_at = now

    def admit(self, nbytes: int, cls: int, now: float) -> bool:
        """Whether a packet may go now; if not, the caller hands it to `enqueue`. Audio always
        goes (a few percent of a link; it is what the call cannot do without): it only uses up
        the rate the others get."""
        rate = self.rate_bps
        if rate is None:
            return True
        self._refill(rate, now)
        if cls == AUDIO:
            self._tokens = max(self._tokens - nbytes, -self._burst(rate))
            return True
        # behind anything as urgent already waiting: order within a class, priority across them
        if self._queues[VIDEO] or (cls == RECOVERY and self._queues[RECOVERY]) or self._tokens < nbytes:
            return False
        self._tokens -= nbytes
        return True

    def enqueue(self, transport: RTCDtlsTransport, data: bytes, cls: int, now: float) -> None:
        self._queues[cls].append((now, transport, data))
        self.queued += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    def waiting_s(self, cls: int, now: float) -> float:
        """How long the oldest packet of a class has waited (0 when none waits)."""
        queue = self._queues[cls]
        return now - queue[0][0] if queue else 0.0

    @property
    def backlog(self) -> bool:
        return any(self._queues)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while any(self._queues):
            now = loop.time()
            rate = self.rate_bps
            if rate is not None:
                self._refill(rate, now)
            for cls in CLASSES:
                queue = self._queues[cls]
                while queue and now - queue[0][0] > MAX_WAIT_S[cls]:
                    queue.popleft()
                    self.expired[cls] += 1
                while queue and (rate is None or self._tokens >= len(queue[0][2])):
                    _, transport, data = queue.popleft()
                    if rate is not None:
                        self._tokens -= len(data)
                    try:
                        await transport._send_rtp(self._stamp(data))
                    except ConnectionError:
                        pass
                if queue:
                    break  # the rate is spent: lower classes wait too
            await asyncio.sleep(TICK_S)

    async def close(self) -> None:
        for queue in self._queues:
            queue.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def summary(self, now: float) -> dict:
        return {"pacing_kbps": None if self.rate_bps is None else round(self.rate_bps / 1000),
                "queued": self.queued, "expired": list(self.expired),
                "video_wait_ms": round(self.waiting_s(VIDEO, now) * 1000)}
