"""/metrics on the main app behind the admin key, or on an address of its own."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from metrics.http import metrics_app, metrics_routes, parse_address, serve_metrics

KEY = "k" * 43


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("consult_things", "things", registry=registry).inc(3)
    return registry


async def test_behind_the_admin_key_like_the_admin_api(aiohttp_client):
    app = web.Application()
    app.add_routes(metrics_routes(_registry(), KEY))
    client = await aiohttp_client(app)

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = await client.get("/metrics", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    assert families["consult_things"].samples[0].value == 3


async def test_openmetrics_when_the_scraper_asks_for_it(aiohttp_client):
    client = await aiohttp_client(metrics_app(_registry()))
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")


async def test_served_on_an_address_of_its_own_without_a_key():
    runner = await serve_metrics(_registry(), "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{host}:{port}/metrics") as response:
                assert response.status == 200
                assert "consult_things_total 3.0" in await response.text()
            async with http.get(f"http://{host}:{port}/api/rooms") as response:
                assert response.status == 404  # nothing else is served there
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9464", ("::1", 9464)),
    (":9464", ("127.0.0.1", 9464)),
])
def test_metrics_addresses(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "host:port", "h:0", "h:70000", ""])
def test_bad_metrics_addresses(address):
    with pytest.raises(ValueError):
        parse_address(address)
