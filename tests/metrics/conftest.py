"""A real server with metrics: the real RoomService, sessions timing their joins, /metrics
behind the admin key; and a scrape read with Prometheus's own text parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signalling.config import ServerConfig
from tests.conftest import ServerUnderTest, running_sfu


class MeteredServer(ServerUnderTest):
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
    """tests/conftest.py's `sfu` with a scrape: the app as signalling/app.py wires the metrics
    (sessions time their joins, /metrics behind the admin key, started and stopped with the app)."""
    config = ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[])
    async with running_sfu(aiohttp_server, config, MeteredServer) as sut:
        assert isinstance(sut, MeteredServer)
        yield sut


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
