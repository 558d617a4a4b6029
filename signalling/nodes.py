"""The nodes of a service sharing one Redis: who is up, how busy, and whether it drains.

Each node writes `node:<id>` (its URL for the other nodes, its live rooms and
participants, whether it is draining) every couple of seconds with a short expiry, so a
node that dies drops out of the list by itself. A room's first join is placed on the
least busy node that is not draining (signalling/placement.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Optional

from redis import asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

HEARTBEAT_TTL_MS = 8_000
HEARTBEAT_EVERY_S = 2.0


@dataclass(frozen=True)
class NodeState:
    id: str
    url: str
    rooms: int
    participants: int
    draining: bool
    pid: int = 0  # the process, for an operator (and its tests) on the machine

    def load(self) -> tuple[int, int]:
        """Rooms first: a room is what is placed, and each costs about the same (a call of two or
        three); participants break ties."""
        return (self.rooms, self.participants)


class NodeDirectory:
    def __init__(self, client: aioredis.Redis, node_id: str, node_url: str, prefix: str,
                 load: Callable[[], tuple[int, int]] = lambda: (0, 0)) -> None:
        """`load()`: (live rooms, participants) on this node now."""
        self.node_id = node_id
        self.node_url = node_url
        self.draining = False
        self._redis = client
        self._prefix = prefix
        self.load = load  # set by whoever knows (the room service, made after this)
        # rooms claimed here whose calls may not have started yet (signalling/placement.py)
        self.claimed: Callable[[], int] = lambda: 0
        self._task: Optional[asyncio.Task] = None

    def _key(self, node_id: str) -> str:
        return f"{self._prefix}node:{node_id}"

    def me(self) -> NodeState:
        rooms, participants = self.load()
        return NodeState(self.node_id, self.node_url, max(rooms, self.claimed()), participants, self.draining,
                         os.getpid())

    async def beat(self) -> None:
        await self._redis.set(self._key(self.node_id), json.dumps(asdict(self.me())), px=HEARTBEAT_TTL_MS)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self._redis.delete(self._key(self.node_id))  # gone now, not in 8 s
        except (RedisError, OSError):
            pass

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                logger.warning("node heartbeat: Redis unreachable (%s)", exc)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def nodes(self) -> list[NodeState]:
        """The nodes whose heartbeat has not expired (this one included, as it is now)."""
        keys = [key async for key in self._redis.scan_iter(match=self._key("*"), count=100)]
        values = await self._redis.mget(keys) if keys else []
        found = {self.node_id: self.me()}
        for raw in values:
            if raw is None:
                continue
            try:
                state = NodeState(**json.loads(raw))
            except (TypeError, ValueError):
                continue
            if state.id != self.node_id:
                found[state.id] = state
        return list(found.values())

    async def least_busy(self) -> NodeState:
        """Where a new room's call should run: the least busy node not draining, this one on a
        tie (no relay), else the first by id (every node choosing alike); this one if every
        node drains (someone has to)."""
        candidates = [n for n in await self.nodes() if not n.draining]
        if not candidates:
            return self.me()
        return min(candidates, key=lambda n: (n.load(), n.id != self.node_id, n.id))
