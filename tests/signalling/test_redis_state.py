"""Rooms and revoked links through a real redis-server, as several nodes see them.

The room-list contract runs against both registries (the embedded file-backed one and
Redis), so the two cannot drift apart; then what only several nodes show: one node's
room on another, two nodes racing for one id, and a revocation reaching every node,
also one whose subscription was cut meanwhile.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from signalling.redis_state import RedisRegistry, RedisRevocations, SharedState, connect
from signalling.registry import InMemoryRegistry, ParticipantRecord, RecordingNote, RegistryError

pytestmark = pytest.mark.slow  # a real redis-server per test

JTI = "0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["file", "redis"])
async def registry(request, tmp_path):
    if request.param == "file":
        yield InMemoryRegistry(tmp_path / "rooms.json")
        return
    client = connect(request.getfixturevalue("redis_server").url)
    yield RedisRegistry(client)
    await client.aclose()


@pytest.fixture
async def nodes(redis_server):
    """Two nodes' clients of one Redis (what two run.py processes with --redis-url hold)."""
    clients = [connect(redis_server.url), connect(redis_server.url)]
    yield clients
    for client in clients:
        await client.aclose()


def person(room_id: str, n: int) -> ParticipantRecord:
    return ParticipantRecord(id=f"p-{n}", room_id=room_id, identity=f"id-{n}", name=f"P{n}", role="patient",
                             permissions=["publish"], joined_at=time.time())


async def test_rooms_keep_every_instance_of_a_reused_id(registry):
    first = await registry.create_room("Mrs Chen", "chen-1", language="zh-CN", clinic="Clinic A")
    assert (await registry.get_room("chen-1")) == first
    with pytest.raises(RegistryError):
        await registry.create_room("again", "chen-1")  # open: not twice
    assert await registry.close_room("chen-1") and not await registry.close_room("chen-1")
    second = await registry.create_room("Mr Li", "chen-1")
    lives = await registry.instances("chen-1")
    assert [(life.instance, life.open) for life in lives] == [(first.instance, False), (second.instance, True)]
    assert [r.id for r in await registry.list_rooms()] == ["chen-1"]
    other = await registry.create_room("Other")
    assert {r.id for r in await registry.list_rooms()} == {"chen-1", other.id}
    await registry.close_room(other.id)
    assert [r.id for r in await registry.list_rooms()] == ["chen-1"]
    assert {r.id for r in await registry.list_rooms(include_closed=True)} == {"chen-1", other.id}
    assert await registry.instances("nope") == [] and await registry.get_room("nope") is None


async def test_bad_rooms_are_refused(registry):
    with pytest.raises(RegistryError):
        await registry.create_room("x", "no spaces")
    with pytest.raises(RegistryError):
        await registry.create_room("x", "r", live_watermark="loud")
    assert await registry.list_rooms(include_closed=True) == []


async def test_participants_fill_a_room_and_leave_with_it(registry):
    await registry.create_room("Room", "r", max_participants=2)
    await registry.add_participant(person("r", 1))
    await registry.add_participant(person("r", 2))
    with pytest.raises(RegistryError):
        await registry.add_participant(person("r", 3))  # full
    changed = person("r", 1)
    changed.muted = {"audio": True, "video": False}
    await registry.update_participant(changed)
    await registry.remove_participant("r", "p-2")
    assert [(p.id, p.muted["audio"]) for p in await registry.list_participants("r")] == [("p-1", True)]
    await registry.close_room("r")
    assert await registry.list_participants("r") == []
    with pytest.raises(RegistryError):
        await registry.add_participant(person("r", 4))  # closed
    with pytest.raises(RegistryError):
        await registry.add_participant(person("nope", 5))


async def test_a_rooms_recording_is_noted_until_stopped_on_purpose(registry):
    room = await registry.create_room("Mrs Chen", "r")
    assert room.recording is None
    note = RecordingNote("20260101T000000Z-0123456789ab", "doctor-1", "Dr Lee", 1, {"patient-1": True})
    assert await registry.note_recording("r", room.instance, note)
    assert (await registry.get_room("r")).recording == note
    assert "recording" not in (await registry.get_room("r")).public()  # not in the admin API's room
    answered = RecordingNote(note.recording_id, "doctor-1", "Dr Lee", 1, {"patient-1": True, "expert-1": False})
    assert await registry.note_recording("r", room.instance, answered)  # someone answered
    assert not await registry.note_recording("r", "another-instance", note)
    assert (await registry.get_room("r")).recording == answered

    # a part carried on elsewhere is not cleared by a late stop of the one it continues
    part2 = RecordingNote("20260101T000100Z-ba9876543210", "doctor-1", "Dr Lee", 2, answered.answers)
    assert await registry.note_recording("r", room.instance, part2)
    assert not await registry.clear_recording("r", note.recording_id)
    assert (await registry.get_room("r")).recording == part2
    assert await registry.clear_recording("r", part2.recording_id)
    assert (await registry.get_room("r")).recording is None
    assert not await registry.clear_recording("nope", part2.recording_id)

    assert await registry.note_recording("r", room.instance, note)
    await registry.close_room("r")  # its recording ends with it, even with its node gone
    assert (await registry.get_room("r")).recording is None
    assert not await registry.note_recording("r", room.instance, note)  # closed
    again = await registry.create_room("Mr Li", "r")
    assert again.recording is None and not await registry.note_recording("r", room.instance, note)


async def test_a_recording_noted_by_one_node_is_seen_by_another(nodes):
    a, b = RedisRegistry(nodes[0]), RedisRegistry(nodes[1])
    room = await a.create_room("Mrs Chen", "r")
    note = RecordingNote("20260101T000000Z-0123456789ab", "admin-api", "admin-api", 3, {"patient-1": True})
    assert await a.note_recording("r", room.instance, note)
    assert (await b.get_room("r")).recording == note
    assert [r.recording for r in await b.list_rooms()] == [note]


async def test_a_room_made_on_one_node_is_the_same_room_on_the_other(nodes):
    a, b = RedisRegistry(nodes[0]), RedisRegistry(nodes[1])
    room = await a.create_room("Mrs Chen", "chen-1")
    assert await b.get_room("chen-1") == room
    assert await b.close_room("chen-1")
    again = await b.create_room("Mr Li", "chen-1")  # reused on b: a's old links are stale everywhere
    assert [life.instance for life in await a.instances("chen-1")] == [room.instance, again.instance]


async def test_two_nodes_racing_for_one_id_cannot_both_have_it(nodes):
    a, b = RedisRegistry(nodes[0]), RedisRegistry(nodes[1])
    for round_ in range(5):
        results = await asyncio.gather(a.create_room("A", f"race-{round_}"), b.create_room("B", f"race-{round_}"),
                                       return_exceptions=True)
        made = [r for r in results if not isinstance(r, BaseException)]
        assert len(made) == 1 and isinstance(next(r for r in results if r not in made), RegistryError), results
        assert (await a.get_room(f"race-{round_}")).instance == made[0].instance


async def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def shared(redis_server, name: str) -> SharedState:
    return SharedState(redis_server.url, f"http://{name}:8080")


async def test_a_revocation_reaches_every_node(redis_server):
    node_a, node_b = shared(redis_server, "a"), shared(redis_server, "b")
    await node_a.start()
    await node_b.start()
    a, b = node_a.revocations, node_b.revocations
    try:
        await a.revoke(JTI, int(time.time()) + 600)
        assert a.is_revoked(JTI)
        assert await wait_until(lambda: b.is_revoked(JTI))
        # a node started later finds it; one that expired is gone from Redis and from the list
        await a.revoke("e" * 32, int(time.time()) + 1)
        late = RedisRevocations(node_a.client)
        await late.load()
        assert late.is_revoked(JTI)
        await asyncio.sleep(1.2)
        assert not a.is_revoked("e" * 32) and len(a) == 1
        assert await node_a.client.get(f"consult:revoked:{'e' * 32}") is None
        with pytest.raises(ValueError):
            await a.revoke("../../etc", int(time.time()) + 600)
    finally:
        await node_a.close()
        await node_b.close()


async def test_a_revocation_made_while_a_node_was_cut_off_is_seen_when_it_is_back(redis_server):
    node_a, node_b = shared(redis_server, "a"), shared(redis_server, "b")
    await node_a.start()
    await node_b.start()
    try:
        await node_a.client.client_kill_filter(_type="pubsub")  # b loses its subscription (and a its own)
        await node_a.revocations.revoke(JTI, int(time.time()) + 600)  # published while b listens to nothing
        assert await wait_until(lambda: node_b.revocations.is_revoked(JTI), timeout=10), "b never reloaded"
    finally:
        await node_a.close()
        await node_b.close()


async def test_a_room_closed_through_one_node_is_told_to_every_node(redis_server):
    node_a, node_b = shared(redis_server, "a"), shared(redis_server, "b")
    closed: list[tuple[str, str]] = []

    async def on_closed(room_id: str, instance: str) -> None:
        closed.append((room_id, instance))

    node_b.on_room_closed = on_closed
    await node_a.start()
    await node_b.start()
    try:
        room = await node_a.registry.create_room("Room", "r1")
        assert await node_a.registry.close_room("r1")
        assert await wait_until(lambda: closed == [("r1", room.instance)])
    finally:
        await node_a.close()
        await node_b.close()


async def test_a_revocation_redis_cannot_store_still_holds_on_this_node(nodes, redis_server):
    a = RedisRevocations(nodes[0])
    await a.load()
    redis_server.stop()
    with pytest.raises(OSError):
        await a.revoke(JTI, int(time.time()) + 600)
    assert a.is_revoked(JTI)


async def test_the_waiting_rooms_texts_are_kept_by_both_registries(tmp_path, redis_server):
    """A room's clinic, doctor's name and contact line as a restarted server (rooms.json) or
    another node (Redis) reads them back; unset ones stay unset."""
    texts = {"clinic": "瑞康皮肤科诊所", "doctor_name": "李医生 Dr Lee", "contact": "Call 021-5555 0123 or reply"}
    clients = [connect(redis_server.url), connect(redis_server.url)]
    try:
        made = [await InMemoryRegistry(tmp_path / "rooms.json").create_room("r", "w1", **texts),
                await RedisRegistry(clients[0]).create_room("r", "w1", **texts)]
        await RedisRegistry(clients[0]).create_room("r", "w2")
        read = [await InMemoryRegistry(tmp_path / "rooms.json").get_room("w1"),
                await RedisRegistry(clients[1]).get_room("w1")]
        for room, again in zip(made, read):
            assert again == room and {field: again.public()[field] for field in texts} == texts
        again = await RedisRegistry(clients[1]).get_room("w2")
        assert again is not None and (again.doctor_name, again.contact) == (None, None)
    finally:
        for client in clients:
            await client.aclose()
