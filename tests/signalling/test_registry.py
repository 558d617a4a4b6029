"""The room list and the revocation list on disk: private (0600), written atomically, and
what they must remember across a restart (room instances; links revoked and not expired)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from signalling.registry import InMemoryRegistry, RecordingNote

JTI = "0123456789abcdef0123456789abcdef"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_room_list_is_private_and_keeps_every_instance(tmp_path):
    rooms = tmp_path / "rooms.json"
    registry = InMemoryRegistry(rooms)
    first = await registry.create_room("Mrs Chen", "chen-1")
    assert mode(rooms) == 0o600 and os.listdir(tmp_path) == ["rooms.json"]  # no temporary file left
    await registry.close_room("chen-1")
    second = await registry.create_room("Mr Li", "chen-1")
    assert second.instance != first.instance and len(second.instance) == 16

    again = InMemoryRegistry(rooms)  # a restart
    lives = await again.instances("chen-1")
    assert [(life.instance, life.open) for life in lives] == [(first.instance, False), (second.instance, True)]
    assert (await again.get_room("chen-1")).instance == second.instance
    assert await again.instances("nope") == []


async def test_a_rooms_running_recording_survives_a_restart(tmp_path):
    """One machine killed mid-recording: the room's record still says what was recording, so the
    call started after the restart records on."""
    rooms = tmp_path / "rooms.json"
    registry = InMemoryRegistry(rooms)
    room = await registry.create_room("Mrs Chen", "chen-1")
    note = RecordingNote("20260101T000000Z-0123456789ab", "doctor-1", "Dr Lee", 2, {"patient-1": True})
    assert await registry.note_recording("chen-1", room.instance, note)
    assert (await InMemoryRegistry(rooms).get_room("chen-1")).recording == note
    assert await registry.clear_recording("chen-1", note.recording_id)
    assert (await InMemoryRegistry(rooms).get_room("chen-1")).recording is None


async def test_a_room_list_from_before_instances_gets_them_and_becomes_private(tmp_path):
    rooms = tmp_path / "rooms.json"
    rooms.write_text(json.dumps([{"id": "demo", "name": "Demo", "created_at": 1000.0, "max_participants": 8,
                                  "closed_at": None, "video_codec": "vp8", "processors": [], "language": "en",
                                  "live_watermark": "off"}]))
    rooms.chmod(0o644)  # as written before
    migrated = (await InMemoryRegistry(rooms).get_room("demo")).instance
    assert migrated and mode(rooms) == 0o600
    assert (await InMemoryRegistry(rooms).get_room("demo")).instance == migrated  # kept from then on


def test_which_instance_a_link_or_recording_belongs_to():
    from signalling.registry import RoomInstance, instance_at, instance_minted_at

    a = RoomInstance("r", "a" * 16, 100.2, 150.0)
    b = RoomInstance("r", "b" * 16, 150.7, None)
    assert instance_minted_at([a, b], 99) is None  # before the room existed
    assert instance_minted_at([a, b], 120) == a
    assert instance_minted_at([a, b], 150) is None  # in the second b was created: could be either's
    assert instance_minted_at([a, b], 151) == b
    assert instance_minted_at([a], 100) == a  # created in that second, and nothing before it
    assert instance_at([a, b], 150.5) == a and instance_at([a, b], 150.8) == b and instance_at([a, b], 1.0) is None


async def test_revocations_are_private_pruned_and_survive_a_restart(tmp_path):
    from signalling.revocations import RevocationList, RevocationsUnreadable

    now = [1000.0]
    path = tmp_path / "revoked-links.json"
    revoked = RevocationList(path, clock=lambda: now[0])
    await revoked.revoke(JTI, 2000)
    await revoked.revoke("f" * 32, 1100)
    assert mode(path) == 0o600 and revoked.is_revoked(JTI) and revoked.is_revoked("f" * 32)
    assert not revoked.is_revoked("e" * 32)
    with pytest.raises(ValueError):
        await revoked.revoke("../../etc", 2000)

    now[0] = 1500.0  # one link has expired by the restart: it is dropped, the other kept
    again = RevocationList(path, clock=lambda: now[0])
    assert again.is_revoked(JTI) and not again.is_revoked("f" * 32) and len(again) == 1
    await again.revoke("e" * 32, 1600)
    assert json.loads(path.read_text()) == {JTI: 2000, "e" * 32: 1600}

    path.write_text("{not json")
    with pytest.raises(RevocationsUnreadable):  # never start as if nothing were revoked
        RevocationList(path)
