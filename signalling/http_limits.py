"""What one unauthenticated HTTP or WebSocket client can hold: request timeouts, a cap on
WebSockets that have not joined yet (per client address and in total), and a 64 KiB frame
cap from the first frame on (docs/SECURITY.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional

from aiohttp import web

from .protocol import CLOSE_TOO_BIG, MAX_MESSAGE_BYTES, error_message

logger = logging.getLogger(__name__)

CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 registry: the page's client re-joins after a backoff


@dataclass(frozen=True)
class HttpLimits:
    """What one unauthenticated client can hold. Defaults in docs/SECURITY.md."""
    pending_ws_per_address: int = 32  # WebSockets not joined yet, per client address (all behind one NAT share it)
    pending_ws_total: int = 256
    header_timeout_s: float = 15.0  # request line + headers must be in by then (also ends idle keep-alives)
    body_timeout_s: float = 30.0  # a request body must be in by then
    linger_s: float = 2.0  # after answering without reading the whole body (401, 405, 408): discard the rest this long
    # Every frame, the first included, is refused over this before it is buffered (aiohttp's check, +1: it
    # refuses a frame of exactly max_msg_size bytes, the protocol allows MAX_MESSAGE_BYTES).
    max_frame_bytes: int = MAX_MESSAGE_BYTES

    def runner_options(self) -> dict[str, Any]:
        """Keyword arguments for web.AppRunner / TCPSite's server: aiohttp 3.14 starts its keep-alive
        timer when a connection opens and closes one that has not sent complete headers by then."""
        return {"keepalive_timeout": self.header_timeout_s, "lingering_time": self.linger_s}


LIMITS_KEY = web.AppKey("http_limits", HttpLimits)


LIMITS_KEY = web.AppKey("http_limits", HttpLimits)


# --- request bodies -----------------------------------------------------------------------------------

def body_deadline(timeout_s: float) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A request body must arrive within timeout_s (aiohttp has no such timeout): a client
    trickling one in is answered 408 and disconnected; a slow handler is not cut short."""
    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                timer = loop.call_later(timeout_s, _expire_if_unread, request, deadline)
                try:
                    return await handler(request)
                finally:
                    timer.cancel()
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own timeout, not ours
            response = web.json_response({"error": "body_timeout",
                                          "message": f"the request body did not arrive within {timeout_s:g} s"},
                                         status=408)
            response.force_close()
            return response
    return middleware


def _expire_if_unread(request: web.Request, deadline: asyncio.Timeout) -> None:
    if not request.content.is_eof():
        deadline.reschedule(asyncio.get_running_loop().time())  # cancels the handler now


# --- WebSocket admission --------------------------------------------------------------------------

class PendingSockets:
    """Counts WebSockets that have not joined yet, per client address and in total."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address, self.total = per_address, total
        self._by_address: Counter[str] = Counter()
        self._refused = 0
        self._refusals_logged_at = 0.0

    @property
    def pending(self) -> int:
        return sum(self._by_address.values())

    def admit(self, address: str) -> Optional[Callable[[], None]]:
        """A release function (idempotent) for the admitted connection, or None when over a cap."""
        if self._by_address[address] >= self.per_address or self.pending >= self.total:
            self._log_refusal(address)
            return None
        self._by_address[address] += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._by_address[address] -= 1
                if not self._by_address[address]:
                    del self._by_address[address]
        return release

    def _log_refusal(self, address: str) -> None:
        # One line per 10 s at most: a flood must not flood the log too.
        self._refused += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= 10.0:
            logger.warning("refused %d WebSocket connection(s) over the not-yet-joined caps (%d per address, %d in "
                           "total; latest from %s)", self._refused, self.per_address, self.total, address)
            self._refused, self._refusals_logged_at = 0, now


class SignallingSocket(web.WebSocketResponse):
    """aiohttp closes a socket itself (1009, no reason) when a frame is over max_msg_size,
    before buffering it; this says so in the protocol's terms first: a typed `too_large`
    error and a close reason, as for any other fatal error."""

    _transport: Optional[asyncio.Transport] = None

    async def prepare(self, request: web.BaseRequest) -> Any:
        self._transport = request.transport
        return await super().prepare(request)

    def abort(self) -> None:
        """Drop the connection without the closing handshake: a client that stopped reading
        never lets a close frame out, and would hold its session open."""
        if self._transport is not None:
            self._transport.abort()

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        if code == CLOSE_TOO_BIG and not message and not self.closed:  # ours always carry a reason
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send_json(error_message("too_large", f"messages are limited to {MAX_MESSAGE_BYTES} bytes",
                                                   fatal=True))
            message = b"too_large"
        return await super().close(code=code, message=message, drain=drain)


async def upgrade(ws: web.WebSocketResponse, request: web.Request) -> bool:
    """Send the 101; False (one log line, no traceback) if the client has already gone."""
    try:
        await ws.prepare(request)
        return True
    except ConnectionError as exc:
        logger.info("WebSocket from %s went away before the upgrade (%s)", request.remote, type(exc).__name__)
        return False


async def refuse_busy(request: web.Request) -> web.WebSocketResponse:
    # A browser cannot read an HTTP status of a refused upgrade, so upgrade and close with a
    # typed reason the page can show; not fatal: it tries again after its backoff.
    ws = web.WebSocketResponse(max_msg_size=1024, timeout=2.0)  # nothing to read; don't wait long for the close
    if await upgrade(ws, request):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_json(error_message("busy", "too many connections are waiting to join; trying again"))
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, message=b"busy")
    return ws


def runner_options(app: web.Application) -> dict[str, Any]:
    """What to pass to web.AppRunner for `app` (run.py; tests that need the timeouts)."""
    limits = app.get(LIMITS_KEY)
    return limits.runner_options() if limits is not None else {}
