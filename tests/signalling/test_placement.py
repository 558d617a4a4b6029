"""Which node runs a room's call: claims in a real Redis, as two nodes make them."""

from __future__ import annotations

import asyncio

import pytest

from signalling import placement as placement_module
from signalling.placement import RoomPlacement
from signalling.redis_state import DEFAULT_PREFIX, connect
from signalling.registry import RegistryUnavailable

pytestmark = pytest.mark.slow  # a real redis-server per test


@pytest.fixture
async def two(redis_server):
    clients = [connect(redis_server.url), connect(redis_server.url)]
    nodes = [RoomPlacement(clients[0], "http://a:8080", DEFAULT_PREFIX),
             RoomPlacement(clients[1], "http://b:8080/", DEFAULT_PREFIX)]
    yield nodes
    for node in nodes:
        await node.stop()
    for client in clients:
        await client.aclose()


async def test_the_first_join_claims_the_room_and_the_other_node_is_told_where(two):
    a, b = two
    assert await a.owner_elsewhere("r1") is None
    assert await a.owner_elsewhere("r1") is None  # already a's
    assert await b.owner_elsewhere("r1") == "http://a:8080"
    assert await b.owner_elsewhere("r2") is None and await a.owner_elsewhere("r2") == "http://b:8080"
    await a.release("r1")  # the call ended on a: the room may go anywhere
    assert await b.owner_elsewhere("r1") is None


async def test_a_release_never_drops_another_nodes_claim(two):
    a, b = two
    assert await a.owner_elsewhere("r1") is None
    await b.release("r1")  # b never had it
    assert await b.owner_elsewhere("r1") == "http://a:8080"


async def test_claims_are_renewed_and_a_lost_one_ends_the_call_here(two, monkeypatch):
    monkeypatch.setattr(placement_module, "RENEW_EVERY_S", 0.05)
    a, b = two
    lost: list[str] = []

    async def on_lost(room_id: str) -> None:
        lost.append(room_id)

    a.on_lost = on_lost
    assert await a.owner_elsewhere("r1") is None
    await a.start()
    ttl = await a._redis.pttl(a._key("r1"))
    await asyncio.sleep(0.3)
    assert await a._redis.pttl(a._key("r1")) > ttl - 200  # renewed, not running down
    # a was cut off past its claim's life: it expired and b took the room
    await a._redis.delete(a._key("r1"))
    assert await b.owner_elsewhere("r1") is None
    for _ in range(40):
        if lost:
            break
        await asyncio.sleep(0.05)
    assert lost == ["r1"]
    assert await a.owner_elsewhere("r1") == "http://b:8080"


async def test_without_redis_a_join_is_told_to_retry(two, redis_server):
    a, _ = two
    redis_server.stop()
    with pytest.raises(RegistryUnavailable):
        await a.owner_elsewhere("r1")


async def test_a_restarted_process_drops_what_its_predecessor_at_its_url_left(two, redis_server):
    a, b = two
    assert await a.owner_elsewhere("r1") is None
    assert await b.owner_elsewhere("r2") is None
    await a.directory.beat()
    # a dies (no clean stop); a new process gets a's URL (a worker restarted on its port)
    client = connect(redis_server.url)
    again = RoomPlacement(client, "http://a:8080", DEFAULT_PREFIX)
    try:
        await again.start()
        assert await client.get(a._key("r1")) is None  # a's room is free to be placed again
        assert a.node_id not in {n.id for n in await again.directory.nodes()}  # nor its heartbeat
        assert await again.owner_elsewhere("r2") == "http://b:8080"  # another URL's room is not touched
    finally:
        await again.stop()
        await client.aclose()


async def test_a_burst_of_new_rooms_spreads_over_the_nodes(two):
    """Rooms placed within one heartbeat interval: each claim is announced at once, so the
    next room's join (reaching either node) sees it and goes to the other node."""
    a, b = two
    for node in (a, b):
        await node.directory.beat()
    placed = {}
    for n, reached in enumerate((a, a, a, a, b, a)):  # whichever node the kernel hands each join to
        room = f"r{n}"
        elsewhere = await reached.owner_elsewhere(room)
        if elsewhere is not None:  # relayed: the other node takes it
            other = b if reached is a else a
            assert await other.owner_elsewhere(room, placed_here=True) is None
        placed[room] = reached.node_url if elsewhere is None else elsewhere
    per_node = sorted(list(placed.values()).count(url) for url in ("http://a:8080", "http://b:8080"))
    assert per_node == [3, 3], placed
