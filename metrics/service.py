"""The metrics of one app: its own registry and what feeds it, started and stopped with the app.

One `Metrics` per aiohttp app (a CollectorRegistry of its own, not prometheus_client's
global one, so tests can build several apps in one process). What it holds:
- MediaCollector: rooms, participants, streams, bitrates, packet/NACK/retransmission/
  FEC/keyframe counters, loss and RTT spreads, processors, watermark copies (read at
  scrape time from the media objects);
- JoinTimes (fed by each ParticipantSession's `on_join_timing`), RecordingSegments (the
  recorder's segment hook), LoopLagMonitor (a task), LogRecordCounter (a log handler).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry

from .collector import MediaCollector
from .events import JoinTimes, RecordingSegments
from .http import metrics_app, metrics_routes, serve_metrics
from .log_errors import LogRecordCounter
from .loop_lag import DEFAULT_INTERVAL_S, LoopLagMonitor

if TYPE_CHECKING:
    from signalling.live_rooms import RoomService


class Metrics:
    def __init__(self, rooms: "RoomService", *, loop_lag_interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(MediaCollector(rooms))
        self.joins = JoinTimes(self.registry)
        self.segments = RecordingSegments(self.registry)
        self.loop_lag = LoopLagMonitor(self.registry, loop_lag_interval_s)
        self.log_records = LogRecordCounter(self.registry)
        self.running = False

    def observe_join(self, stage: str, seconds: float) -> None:
        """For ParticipantSession(on_join_timing=...)."""
        self.joins.observe(stage, seconds)

    # --- lifecycle (on the event loop) -------------------------------------------------------

    def start(self) -> None:
        if not self.running:
            self.running = True
            self.loop_lag.start()
            self.segments.start()
            self.log_records.install()

    async def stop(self) -> None:
        if self.running:
            self.running = False
            self.log_records.uninstall()
            self.segments.stop()
            await self.loop_lag.stop()

    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For `app.cleanup_ctx.append(...)`: started with the app, stopped at its cleanup."""
        self.start()
        yield
        await self.stop()

    # --- serving ------------------------------------------------------------------------------

    def routes(self, api_key: Optional[str]) -> list[web.RouteDef]:
        """GET /metrics for the main app; with `api_key`, behind it (Bearer, as the admin API)."""
        return metrics_routes(self.registry, api_key)

    def app(self, api_key: Optional[str] = None) -> web.Application:
        """An app serving only /metrics (for an address of its own)."""
        return metrics_app(self.registry, api_key)

    async def serve(self, host: str, port: int, api_key: Optional[str] = None) -> web.AppRunner:
        """Serve /metrics on host:port (no key by default); `await runner.cleanup()` stops it."""
        return await serve_metrics(self.registry, host, port, api_key)
