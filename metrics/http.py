"""Serving /metrics: on the main port behind the admin key, or on an address of its own.

The handler is prometheus_client's own for aiohttp (content negotiation: the Prometheus
text format, or OpenMetrics when the scraper asks for it; gzip when accepted). It runs
on the event loop, so the collector reads the media objects from the thread that
changes them.
"""

from __future__ import annotations

import hmac
import json
from typing import Optional

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from signalling.http_limits import HttpLimits

METRICS_PATH = "/metrics"


def metrics_handler(registry: CollectorRegistry, api_key: Optional[str] = None) -> Handler:
    """GET /metrics for this registry; with `api_key`, only for `Authorization: Bearer <api_key>`,
    as the admin API (signalling/admin.py)."""
    serve = make_aiohttp_handler(registry)

    async def handler(request: web.Request) -> web.StreamResponse:
        if api_key is not None and not bearer_matches(request, api_key):
            return web.Response(status=401, content_type="application/json",
                                text=json.dumps({"error": "unauthorized",
                                                 "message": "send 'Authorization: Bearer <admin key>'"}))
        return await serve(request)

    return handler


def bearer_matches(request: web.Request, api_key: str) -> bool:
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), api_key.encode())


def metrics_routes(registry: CollectorRegistry, api_key: Optional[str]) -> list[web.RouteDef]:
    return [web.get(METRICS_PATH, metrics_handler(registry, api_key))]


def metrics_app(registry: CollectorRegistry, api_key: Optional[str] = None) -> web.Application:
    """An app serving only /metrics, for an address of its own (`--metrics-address`): no key by
    default, so bind it where only the Prometheus server reaches it."""
    app = web.Application()
    app.add_routes(metrics_routes(registry, api_key))
    return app


async def serve_metrics(registry: CollectorRegistry, host: str, port: int,
                        api_key: Optional[str] = None) -> web.AppRunner:
    """Start serving metrics_app on host:port; `await runner.cleanup()` stops it."""
    app = metrics_app(registry, api_key)
    runner = web.AppRunner(app, access_log=None, **HttpLimits().runner_options())  # header timeout
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def parse_address(address: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (default host) -> (host, port); ValueError otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics address {address!r} is not HOST:PORT")
    host = host.strip("[]") or default_host
    return host, int(port)
