"""A join that reached a node other than the room's: its WebSocket relayed to the owner.

The page never needs to know which node runs its room. The node it reached opens a
WebSocket to the owner's /ws, sends the join it received, and passes text frames both
ways until either side closes, then closes the other with the same code. Only signalling
goes this way: the owner's offer names the owner's own addresses, so media flows between
the page and the owner directly.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

import aiohttp
from aiohttp import WSMsgType, web

from .http_limits import CLOSE_TRY_AGAIN_LATER

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
CLOSE_GOING_AWAY = 1001  # RFC 6455: the owner closed without a code
# Marks a join one node relayed to another it placed the room on: that node claims the room
# rather than placing it again. Signed with the key every node shares, valid this long.
PLACED_HEADER = "X-Consult-Placed"
PLACED_VALID_S = 30


def placed_header(key: str, now: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if now is None else now))
    return {PLACED_HEADER: f"{stamp}.{_sign(key, stamp)}"}


def is_placed(key: str, value: str | None, now: float | None = None) -> bool:
    """Whether a join came relayed from another node of this service (the header is genuine and fresh)."""
    if not value or "." not in value:
        return False
    stamp, _, signature = value.partition(".")
    if not stamp.isdigit() or abs((time.time() if now is None else now) - int(stamp)) > PLACED_VALID_S:
        return False
    return hmac.compare_digest(signature, _sign(key, stamp))


def _sign(key: str, stamp: str) -> str:
    return hmac.new(key.encode(), f"consult-placed:{stamp}".encode(), hashlib.sha256).hexdigest()


async def relay_websocket(client: web.WebSocketResponse, owner_url: str, join_text: str,
                          headers: dict[str, str] | None = None) -> None:
    """Relay `client` (its join already read: `join_text`) to the owner node's /ws."""
    url = owner_url.replace("http", "ws", 1) + "/ws"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.ws_connect(url, heartbeat=20.0, headers=headers) as owner:
                await owner.send_str(join_text)
                to_owner = asyncio.ensure_future(_pump(client, owner))
                to_client = asyncio.ensure_future(_pump(owner, client))
                done, pending = await asyncio.wait({to_owner, to_client}, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                if to_client in done:  # the owner ended the session: the page hears its close code
                    await client.close(code=owner.close_code or CLOSE_GOING_AWAY)
                else:
                    await owner.close()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        logger.warning("relaying a join to %s failed: %s", owner_url, exc)
        if not client.closed:
            await client.close(code=CLOSE_TRY_AGAIN_LATER, message=b"relay")


async def _pump(source, sink) -> None:
    """Text frames from `source` to `sink` until `source` closes."""
    async for message in source:
        if message.type == WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break

