"""The nodes of a service in a real Redis: who is up, the least busy, and draining."""

from __future__ import annotations

import pytest

from signalling.nodes import NodeDirectory
from signalling.redis_state import DEFAULT_PREFIX, connect

pytestmark = pytest.mark.slow  # a real redis-server per test


@pytest.fixture
async def client(redis_server):
    client = connect(redis_server.url)
    yield client
    await client.aclose()


def node(client, name: str, rooms: int = 0, participants: int = 0) -> NodeDirectory:
    return NodeDirectory(client, name, f"http://{name}:8080", DEFAULT_PREFIX, lambda: (rooms, participants))


async def test_new_rooms_go_to_the_least_busy_node_not_draining(client):
    a, b, c = node(client, "a", 2, 6), node(client, "b", 1, 3), node(client, "c", 1, 3)
    for n in (a, b, c):
        await n.beat()
    assert {n.id for n in await a.nodes()} == {"a", "b", "c"}
    assert (await a.least_busy()).id == "b"  # b and c tie: the first by id after this node
    assert (await c.least_busy()).id == "c"  # on a tie the node reached keeps it (no relay)
    c.draining = True
    await c.beat()
    assert (await c.least_busy()).id == "b"
    b.draining = True
    await b.beat()
    assert (await b.least_busy()).id == "a"  # the busiest, but the only one not draining


async def test_every_node_draining_leaves_the_room_where_it_is(client):
    a, b = node(client, "a"), node(client, "b")
    a.draining = b.draining = True
    await a.beat()
    await b.beat()
    assert (await a.least_busy()).id == "a"


async def test_a_stopped_node_leaves_the_list_at_once(client):
    a, b = node(client, "a"), node(client, "b", 0, 0)
    await a.beat()
    await b.beat()
    await b.stop()
    assert [n.id for n in await a.nodes()] == ["a"]
