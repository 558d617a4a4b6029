"""Event-loop lag: a loop held busy shows up as a late wake-up of the monitor's timer."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from metrics.loop_lag import LoopLagMonitor


async def test_a_blocked_loop_is_observed_as_lag_and_the_task_stops():
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, interval_s=0.02)
    monitor.start()
    await asyncio.sleep(0.1)
    time.sleep(0.3)  # the loop is held: the monitor's next wake-up comes ~0.3 s late
    await asyncio.sleep(0.1)
    await monitor.stop()
    count = registry.get_sample_value("consult_event_loop_lag_seconds_count")
    assert count is not None and count >= 2
    late = count - registry.get_sample_value("consult_event_loop_lag_seconds_bucket", {"le": "0.25"})
    assert late >= 1  # at least one wake-up more than 0.25 s late
    stopped_at = registry.get_sample_value("consult_event_loop_lag_seconds_count")
    await asyncio.sleep(0.1)
    assert registry.get_sample_value("consult_event_loop_lag_seconds_count") == stopped_at
