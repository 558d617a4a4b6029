"""A clinic's webhook receiver for tests: a real HTTP server on loopback that checks every
signature, and can be told to fail, to hang, or to be down."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field

from aiohttp import web

from webhooks import SignatureError, verify


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WebhookReceiver:
    secret: str
    port: int = field(default_factory=free_port)
    mode: str = "ok"  # ok | fail (HTTP fail_status) | hang (answers after hang_s)
    fail_status: int = 503
    hang_s: float = 30.0
    attempts: int = 0  # every request, taken or not
    events: list[dict] = field(default_factory=list)  # bodies answered 2xx, in arrival order
    bad_signatures: int = 0
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        try:
            event_id = verify(self.secret, request.headers, body)
        except SignatureError:
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.mode == "fail":
            return web.Response(status=self.fail_status)
        if self.mode == "hang":
            await asyncio.sleep(self.hang_s)
        event = json.loads(body)
        assert event["id"] == event_id
        async with self._arrived:
            self.events.append(event)
            self._arrived.notify_all()
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[dict]:
        """The first `count` events taken, once that many have arrived."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.events) >= count), timeout)
        return self.events[:count]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]
