"""Event-loop lag: how late a periodic sleep wakes up.

Everything in the server (every packet forwarded, every signalling message) runs on one
asyncio loop; when it is busy, everything waits. A task sleeps `interval_s` at a time
and observes by how much the wake-up came late into a Histogram. It costs one wake-up
per interval; started with the app, cancelled at its cleanup.
"""

from __future__ import annotations

import asyncio
from typing import Optional

from prometheus_client import CollectorRegistry, Histogram

LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DEFAULT_INTERVAL_S = 0.5


class LoopLagMonitor:
    def __init__(self, registry: CollectorRegistry, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.histogram = Histogram("consult_event_loop_lag_seconds",
                                   f"How late the event loop ran a timer due every {interval_s:g} s",
                                   buckets=LAG_BUCKETS_S, registry=registry)
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.histogram.observe(max(0.0, loop.time() - due))
