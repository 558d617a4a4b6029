"""Rooms and revoked links shared through Redis, so several nodes serve as one service.

With `--redis-url` every node reads and writes the same room list (each id's instances:
a link minted on one node opens the room on another, a room id reused anywhere makes
old links stale everywhere) and the same revoked links (a kick or an admin's revocation
on one node is refused on every node within a moment). Who is in a room stays with the
node that runs it: live participants are that process's facts, and a node that dies
must not leave them behind in Redis as ghosts that fill the room.

Keys, under a prefix (default `consult:`):
  room:<id>        JSON: the room's current record (with the note of a recording running in
                   its call: signalling/live_recording.py) and its earlier (closed) instances
  rooms            set of room ids
  revoked:<jti>    the revoked link's expiry (unix s); Redis drops it then (EXPIREAT)
and the channel `revoked` announces each revocation to the other nodes.

Changes to one room are WATCH/MULTI transactions on its key, so two nodes creating the
same id at once cannot both succeed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Optional, cast

from redis import asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, WatchError

from .placement import RoomPlacement
from .registry import (
    LocalParticipants,
    ParticipantRecord,
    RecordingNote,
    RegistryError,
    RegistryUnavailable,
    RoomInstance,
    RoomRecord,
    new_room_record,
)
from .tokens import JTI_PATTERN

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "consult:"
# After losing the subscription, wait this long before trying again (doubling up to the cap).
RESUBSCRIBE_FIRST_S = 0.5
RESUBSCRIBE_MAX_S = 10.0
SUBSCRIBE_TIMEOUT_S = 10.0


def connect(url: str) -> aioredis.Redis:
    """A client for `url` (redis:// or rediss://); it connects at its first command."""
    return aioredis.from_url(url, decode_responses=True, health_check_interval=10)


def _unavailable(method):
    """Redis errors out of a registry method become RegistryUnavailable (a join gets `unavailable`)."""
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise RegistryUnavailable(f"the room list cannot be reached now ({exc.__class__.__name__}); "
                                      "try again shortly") from exc
    return wrapper


class RedisRegistry:
    """signalling.registry.RoomRegistry over Redis: rooms shared, participants this node's."""

    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = client
        self._prefix = prefix
        self.closed_channel = f"{prefix}room-closed"
        self._participants = LocalParticipants()

    def _room_key(self, room_id: str) -> str:
        return f"{self._prefix}room:{room_id}"

    @_unavailable
    async def create_room(self, name: str, room_id: Optional[str] = None, max_participants: int = 8,
                          video_codec: str = "vp8", processors: Optional[list[str]] = None,
                          language: Optional[str] = None, live_watermark: str = "off",
                          clinic: Optional[str] = None, consent_required: bool = False,
                          doctor_name: Optional[str] = None, contact: Optional[str] = None) -> RoomRecord:
        room = new_room_record(name, room_id, max_participants, video_codec, processors, language, live_watermark,
                               clinic, consent_required, doctor_name, contact)

        def create(existing: Optional[dict], pipe: Pipeline) -> bool:
            earlier = existing["earlier"] if existing else []
            if existing is not None:
                current = _room(existing)
                if current.open:
                    raise RegistryError(f"room {room.id} already exists")
                # the id is used again: the closed life stays known, for its recordings
                earlier = [*earlier, _life(current.life())]
            pipe.set(self._room_key(room.id), json.dumps({"room": asdict(room), "earlier": earlier}))
            pipe.sadd(f"{self._prefix}rooms", room.id)
            return True

        await self._change_room(room.id, create)
        self._participants.forget_room(room.id)  # a new life of the id starts empty
        return room

    async def _change_room(self, room_id: str, change: Callable[[Optional[dict], Pipeline], bool]) -> bool:
        """`change(document, pipe)` queues writes for the room's document as it is now, or
        declines (False); all or nothing, decided again on what another node wrote meanwhile."""
        key = self._room_key(room_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    document = _document(await pipe.get(key))
                    pipe.multi()
                    if not change(document, pipe):
                        return False
                    await pipe.execute()
                    return True
                except WatchError:
                    continue

    @_unavailable
    async def get_room(self, room_id: str) -> Optional[RoomRecord]:
        document = _document(await self._redis.get(self._room_key(room_id)))
        return None if document is None else _room(document)

    @_unavailable
    async def instances(self, room_id: str) -> list[RoomInstance]:
        """Every instance of the id, oldest first; the last is the current room (open or closed)."""
        document = _document(await self._redis.get(self._room_key(room_id)))
        if document is None:
            return []
        earlier = [RoomInstance(room_id, e["instance"], e["created_at"], e["closed_at"]) for e in document["earlier"]]
        return [*earlier, _room(document).life()]

    @_unavailable
    async def list_rooms(self, include_closed: bool = False) -> list[RoomRecord]:
        # (redis-py types its commands for both its clients; this one's are awaitable)
        ids = sorted(await cast(Awaitable[set[str]], self._redis.smembers(f"{self._prefix}rooms")))
        if not ids:
            return []
        documents = await self._redis.mget([self._room_key(room_id) for room_id in ids])
        rooms = [_room(document) for raw in documents if (document := _document(raw)) is not None]
        return [room for room in rooms if include_closed or room.open]

    @_unavailable
    async def close_room(self, room_id: str) -> bool:
        def close(document: Optional[dict], pipe: Pipeline) -> bool:
            if document is None or document["room"].get("closed_at") is not None:
                return False
            document["room"]["closed_at"] = time.time()
            document["room"]["recording"] = None  # its recording ended with it (here, or with its node)
            pipe.set(self._room_key(room_id), json.dumps(document))
            # every node ends the call if it runs it (its registry's close reached one node)
            pipe.publish(self.closed_channel, f"{room_id} {document['room']['instance']}")
            return True

        if not await self._change_room(room_id, close):
            return False
        self._participants.forget_room(room_id)
        return True

    @_unavailable
    async def note_recording(self, room_id: str, instance: str, note: RecordingNote) -> bool:
        """The room's call records `note` now (started, continued, or someone answered): kept
        until cleared, so the node that runs the room's next call records on (this one may die
        meanwhile). False when `instance` is no longer the room's open one."""
        def note_it(document: Optional[dict], pipe: Pipeline) -> bool:
            if document is None or not _room(document).open or document["room"]["instance"] != instance:
                return False
            document["room"]["recording"] = asdict(note)
            pipe.set(self._room_key(room_id), json.dumps(document))
            return True

        return await self._change_room(room_id, note_it)

    @_unavailable
    async def clear_recording(self, room_id: str, recording_id: str) -> bool:
        """That recording was stopped on purpose: the room's next call does not record on. Only
        if the note still names it (another node may be recording the next part already)."""
        def clear(document: Optional[dict], pipe: Pipeline) -> bool:
            note = document["room"].get("recording") if document is not None else None
            if document is None or note is None or note.get("recording_id") != recording_id:
                return False
            document["room"]["recording"] = None
            pipe.set(self._room_key(room_id), json.dumps(document))
            return True

        return await self._change_room(room_id, clear)

    @_unavailable
    async def add_participant(self, participant: ParticipantRecord) -> None:
        self._participants.add(await self.get_room(participant.room_id), participant)

    async def update_participant(self, participant: ParticipantRecord) -> None:
        self._participants.update(participant)

    async def remove_participant(self, room_id: str, participant_id: str) -> None:
        self._participants.remove(room_id, participant_id)

    async def list_participants(self, room_id: str) -> list[ParticipantRecord]:
        return self._participants.of(room_id)


class RedisRevocations:
    """Revoked links in Redis, with this node's copy for the join path's check (no round
    trip per join). The copy is loaded at start, follows the `revoked` channel (`note`),
    and is loaded again whenever the subscription comes back after a loss, so a
    revocation made while this node was cut off from Redis is not missed."""

    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = client
        self._prefix = prefix
        self.channel = f"{prefix}revoked"
        self._revoked: dict[str, int] = {}
        # told of each link revoked on any node (this one too): ends the sessions joined with it here
        self.on_revoked: Optional[Callable[[str], Awaitable[object]]] = None

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Refuse the link everywhere until `expires_at`; raises OSError when Redis cannot
        be written (the refusal then holds on this node only)."""
        if not JTI_PATTERN.match(jti):
            raise ValueError("not a link id (jti): 32 lowercase hexadecimal digits")
        expires_at = max(int(expires_at), self._revoked.get(jti, 0))
        self._revoked[jti] = expires_at
        if expires_at <= time.time():
            return  # expired already: refused as such
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{self._prefix}revoked:{jti}", expires_at, exat=expires_at)
                pipe.publish(self.channel, f"{jti} {expires_at}")
                await pipe.execute()
        except RedisError as exc:
            raise OSError(f"the revocation could not be stored in Redis: {exc}") from exc

    def is_revoked(self, jti: str) -> bool:
        expires_at = self._revoked.get(jti)
        return expires_at is not None and expires_at > time.time()

    def __len__(self) -> int:
        now = time.time()
        return sum(1 for expires_at in self._revoked.values() if expires_at > now)

    async def load(self) -> None:
        """Read every revoked link still alive from Redis."""
        now = time.time()
        keys = [key async for key in self._redis.scan_iter(match=f"{self._prefix}revoked:*", count=500)]
        values = await self._redis.mget(keys) if keys else []
        for key, value in zip(keys, values):
            jti = key[len(f"{self._prefix}revoked:"):]
            if value is not None and value.isdigit() and int(value) > now:
                self._revoked[jti] = max(int(value), self._revoked.get(jti, 0))
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp > now}

    def note(self, data: str) -> None:
        """A revocation announced on the channel (by any node)."""
        jti, _, expires = data.partition(" ")
        if JTI_PATTERN.match(jti) and expires.isdigit():
            self._revoked[jti] = max(int(expires), self._revoked.get(jti, 0))
            logger.info("link %s… revoked until %s", jti[:8], expires)
            if self.on_revoked is not None:
                asyncio.ensure_future(self.on_revoked(jti)).add_done_callback(_log_failure)


class ChannelFollower:
    """This node's subscription to the service's channels. After losing it (Redis restarted,
    a network cut) it subscribes again and calls `resubscribed()`, so the node rereads
    what it may have missed meanwhile."""

    def __init__(self, client: aioredis.Redis, handlers: dict[str, Callable[[str], None]],
                 resubscribed: Callable[[], Awaitable[None]]) -> None:
        self._redis = client
        self._handlers = handlers
        self._resubscribed = resubscribed
        self._task: Optional[asyncio.Task] = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Raises RedisError when no subscription is made within SUBSCRIBE_TIMEOUT_S."""
        self._task = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_TIMEOUT_S)
        except asyncio.TimeoutError:
            await self.stop()
            raise RedisError(f"no subscription to {', '.join(self._handlers)} within {SUBSCRIBE_TIMEOUT_S:g} s") \
                from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        wait = RESUBSCRIBE_FIRST_S
        first = True
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(*self._handlers)
                    if not first:
                        await self._resubscribed()
                    first, wait = False, RESUBSCRIBE_FIRST_S
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        handler = self._handlers.get(str(message.get("channel")))
                        if message.get("type") == "message" and handler is not None:
                            handler(str(message.get("data")))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                logger.warning("lost the Redis subscription (%s): this node goes on with what it knew", exc)
            await asyncio.sleep(wait)
            wait = min(wait * 2, RESUBSCRIBE_MAX_S)


class SharedState:
    """What a node keeps in Redis: the room list, the revoked links and which node runs each
    room, over one client. `node_url`: where the other nodes reach this one."""

    def __init__(self, url: str, node_url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = connect(url)
        self.registry = RedisRegistry(self.client, prefix)
        self.revocations = RedisRevocations(self.client, prefix)
        self.placement = RoomPlacement(self.client, node_url, prefix)
        # told of each room closed on any node: its call ends here if it runs here
        self.on_room_closed: Optional[Callable[[str, str], Awaitable[object]]] = None
        self._follower = ChannelFollower(self.client, {self.revocations.channel: self.revocations.note,
                                                       self.registry.closed_channel: self._room_closed},
                                         resubscribed=self.revocations.load)

    async def start(self) -> None:
        try:
            await self.revocations.load()
            await self._follower.start()
            await self.placement.start()
        except (RedisError, OSError) as exc:
            raise RuntimeError(f"Redis cannot be reached ({exc}): is --redis-url right, and is it running?") from exc

    async def close(self) -> None:
        await self.placement.stop()
        await self._follower.stop()
        await self.client.aclose()

    def _room_closed(self, data: str) -> None:
        room_id, _, instance = data.partition(" ")
        if self.on_room_closed is not None and room_id and instance:
            asyncio.ensure_future(self.on_room_closed(room_id, instance)).add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("acting on a message from another node failed: %r", task.exception())


def _document(raw: Optional[str]) -> Optional[dict]:
    return None if raw is None else json.loads(raw)


def _room(document: dict) -> RoomRecord:
    return RoomRecord.from_dict(document["room"])


def _life(life: RoomInstance) -> dict:
    return {"instance": life.instance, "created_at": life.created_at, "closed_at": life.closed_at}
