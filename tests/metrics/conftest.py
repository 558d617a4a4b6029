"""A real server with metrics: the real RoomService, sessions timing their joins, /metrics
behind the admin key; and a scrape read with Prometheus's own text parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from metrics import Metrics
from signalling.app import build_services
from signalling.config import ServerConfig
from signalling.session import ParticipantSession
from tests.conftest import ServerUnderTest


class MeteredServer(ServerUnderTest):
    def __init__(self, services, base_url: str, metrics: Metrics) -> None:
        super().__init__(services, base_url)
        self.metrics = metrics

    async def scrape(self) -> "Scrape":
        """GET /metrics as Prometheus would, with the admin key."""
        headers = {"Authorization": f"Bearer {self.services.admin_key}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.base_url}/metrics", headers=headers) as response:
                assert response.status == 200, await response.text()
                return Scrape(await response.text())


class Scrape:
    """Samples by (name, labels), from the real Prometheus text parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                        for f in self.families.values() for s in f.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def total(self, name: str, **labels: str) -> float:
        """Summed over the labels not given."""
        return sum(v for (n, ls), v in self.samples.items()
                   if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


@pytest.fixture
async def metered(aiohttp_server, tmp_path) -> AsyncIterator[MeteredServer]:
    """Like tests/conftest.py's `sfu`, with the metrics wired as signalling/app.py wires them:
    sessions report join times, /metrics needs the admin key, the metrics run with the app."""
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[])
    services = build_services(config)
    metrics = Metrics(services.rooms, loop_lag_interval_s=0.05)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        session = ParticipantSession(ws, rooms=services.rooms, issuer=services.issuer, ice_servers=lambda pid: [],
                                     join_timeout_s=config.join_timeout_s, answer_timeout_s=config.answer_timeout_s,
                                     on_join_timing=metrics.observe_join)
        await session.run()
        return ws

    async def shutdown(app: web.Application) -> None:
        await services.rooms.shutdown()

    app = web.Application()
    app.router.add_get("/ws", websocket)
    app.add_routes(metrics.routes(api_key=services.admin_key))
    app.cleanup_ctx.append(metrics.cleanup_ctx)
    app.on_shutdown.append(shutdown)
    server = await aiohttp_server(app)
    config.port = server.port
    sut = MeteredServer(services, str(server.make_url("")).rstrip("/"), metrics)
    yield sut
    await asyncio.gather(*(p.close() for p in sut.participants), return_exceptions=True)


async def eventually(check, timeout: float = 20.0, interval: float = 0.2):
    """Wait for `check()` (sync or async) to return something true; returns it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result or loop.time() > deadline:
            assert result, "the condition did not hold in time"
            return result
        await asyncio.sleep(interval)
