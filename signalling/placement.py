"""Which node runs each room's call, for several nodes sharing one Redis.

A room's call (its peers, recording, processors) lives on one node. The first join
claims the room for the node it reached: `room-owner:<id>` in Redis names the node and
the URL other nodes reach it at, and expires unless the owner renews it every few
seconds. A join reaching another node is relayed there (signalling/node_relay.py); its
media goes straight to the owner, whose addresses are in the offer.

When the owner dies its claim expires and the next join, on whichever node, claims the
room afresh: the pages' own reconnects bring a call back within the claim's lifetime.
A node that finds its claim gone or taken (it was cut off from Redis for longer than
that) ends its copy of the call, so two nodes never run one room: the pages rejoin where
the room now lives.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Optional

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from .nodes import NodeDirectory
from .registry import RegistryUnavailable

logger = logging.getLogger(__name__)

CLAIM_TTL_MS = 8_000
RENEW_EVERY_S = 2.0

# Renew or drop a claim only while it is still this node's (compare and act in one step).
_IF_MINE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call({}) else return 0 end"
_RENEW = _IF_MINE.format("'pexpire', KEYS[1], ARGV[2]")
_RELEASE = _IF_MINE.format("'del', KEYS[1]")


class RoomPlacement:
    def __init__(self, client: aioredis.Redis, node_url: str, prefix: str) -> None:
        """`node_url`: where the other nodes reach this one's HTTP server (its /ws). The room
        service tells `directory.load` how busy this node is, for placing new rooms."""
        self.node_id = secrets.token_hex(8)
        self.node_url = node_url.rstrip("/")
        self.directory = NodeDirectory(client, self.node_id, self.node_url, prefix)
        self._redis = client
        self._prefix = prefix
        self._claim = json.dumps({"node": self.node_id, "url": self.node_url})
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._mine: set[str] = set()
        self.directory.claimed = lambda: len(self._mine)
        self._task: Optional[asyncio.Task] = None
        # told of a room whose claim this node lost: its local call must end (pages rejoin)
        self.on_lost: Optional[Callable[[str], Awaitable[object]]] = None

    def _key(self, room_id: str) -> str:
        return f"{self._prefix}room-owner:{room_id}"

    async def start(self) -> None:
        await self._forget_predecessor()
        self.directory.start()
        if self._task is None:
            self._task = asyncio.ensure_future(self._keep_claims())

    async def _forget_predecessor(self) -> None:
        """Claims (and a heartbeat) under this node's own URL but another node id belong to the
        process that had this URL before and died: this one holds the port now, so nobody
        else can be running there. Dropped at once, its rooms are placed again on the next
        joins instead of 8 s later (a worker restarted by its supervisor)."""
        for pattern in (f"{self._prefix}room-owner:*", f"{self._prefix}node:*"):
            async for key in self._redis.scan_iter(match=pattern, count=200):
                raw = await self._redis.get(key)
                try:
                    claim = json.loads(raw) if raw else None
                except ValueError:
                    continue
                if claim and claim.get("url") == self.node_url and claim.get("node", claim.get("id")) != self.node_id:
                    await self._release(keys=[key], args=[raw])
                    logger.info("dropped %s, left by the process that had this node's URL before", key)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for room_id in list(self._mine):
            await self.release(room_id)
        await self.directory.stop()

    @property
    def draining(self) -> bool:
        return self.directory.draining

    async def drain(self) -> None:
        """Take no new rooms: their first joins go to other nodes (the heartbeat says so at once)."""
        self.directory.draining = True
        try:
            await self.directory.beat()
        except (RedisError, OSError) as exc:
            logger.warning("could not announce the drain (%s): the next heartbeat will", exc)

    async def owner_elsewhere(self, room_id: str, placed_here: bool = False) -> Optional[str]:
        """None when this node runs the room (claimed now, or already); else the URL of the
        node that runs it, or that should (the least busy, for a room running nowhere, unless
        `placed_here`: another node relayed the join for this one to take). Raises
        RegistryUnavailable when Redis cannot be reached."""
        key = self._key(room_id)
        try:
            for _ in range(3):  # a claim may expire between the two steps: ask again
                if await self._redis.get(key) is None and not placed_here:
                    target = await self.directory.least_busy()
                    if target.id != self.node_id:
                        return target.url
                if await self._redis.set(key, self._claim, nx=True, px=CLAIM_TTL_MS):
                    self._mine.add(room_id)
                    await self._announce_load()
                    return None
                current = await self._redis.get(key)
                if current is None:
                    continue
                if current == self._claim:
                    self._mine.add(room_id)
                    return None
                return str(json.loads(current)["url"])
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"which node runs the room cannot be told now ({exc.__class__.__name__}); "
                                      "try again shortly") from exc
        raise RegistryUnavailable("the room's owner changed three times in a row; try again shortly")

    async def _announce_load(self) -> None:
        """A heartbeat now, not at the next beat: joins for other new rooms may be arriving this
        very second (a clinic's morning), and each must see this room already placed here."""
        try:
            await self.directory.beat()
        except (RedisError, OSError) as exc:
            logger.warning("could not announce the new room (%s): the next heartbeat will", exc)

    async def owner_url(self, room_id: str) -> Optional[str]:
        """The URL of the node running the room's call, when that is another node (else None)."""
        try:
            current = await self._redis.get(self._key(room_id))
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"which node runs the room cannot be told now ({exc.__class__.__name__})") \
                from exc
        if current is None or current == self._claim:
            return None
        return str(json.loads(current)["url"])

    async def release(self, room_id: str) -> None:
        """The call ended here: the next join may place the room anywhere."""
        self._mine.discard(room_id)
        try:
            await self._release(keys=[self._key(room_id)], args=[self._claim])
        except (RedisError, OSError) as exc:
            logger.warning("could not release room %s (%s): its claim expires by itself", room_id, exc)

    async def _keep_claims(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            for room_id in list(self._mine):
                try:
                    kept = await self._renew(keys=[self._key(room_id)], args=[self._claim, CLAIM_TTL_MS])
                except (RedisError, OSError) as exc:
                    logger.warning("cannot renew room %s (%s); its call goes on here for now", room_id, exc)
                    continue
                if not kept and room_id in self._mine:
                    logger.error("room %s is no longer this node's (its claim expired or was taken): "
                                 "ending its call here so its pages rejoin where it lives", room_id)
                    self._mine.discard(room_id)
                    if self.on_lost is not None:
                        try:
                            await self.on_lost(room_id)
                        except Exception:  # the other rooms' claims must still be renewed
                            logger.exception("ending the call of room %s failed", room_id)
