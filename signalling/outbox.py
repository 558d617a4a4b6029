"""Ordered, bounded delivery of server messages to one WebSocket.

Media-plane callbacks are synchronous and must never wait on a slow client, so
they enqueue; one writer task per socket sends in order. A client that lets
the queue fill up is too slow to follow the room and is disconnected.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Optional

from aiohttp import web

logger = logging.getLogger(__name__)

OUTBOX_SIZE = 256


class Outbox:
    def __init__(self, ws: web.WebSocketResponse, on_overflow: Callable[[], None], size: int = OUTBOX_SIZE) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[Optional[dict]] = asyncio.Queue(maxsize=size)
        self._on_overflow = on_overflow
        self._task = asyncio.ensure_future(self._run())
        self._closed = False

    def put(self, message: dict) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("outbox full, disconnecting a slow client")
            self._closed = True
            self._on_overflow()

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            if self._ws.closed:
                continue
            try:
                await self._ws.send_str(json.dumps(message, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                pass  # the socket is going away; the session's reader notices

    async def flush_and_close(self, timeout: float = 2.0) -> None:
        """Deliver what is queued (bounded in time), then stop the writer."""
        self._closed = True
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            self._task.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._task.cancel()
