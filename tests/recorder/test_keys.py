"""KEK handling, rotation (re-wrap only) and purge (crypto-shredding)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat

import pytest
from cryptography.exceptions import InvalidTag

from recorder import crypto
from recorder.audit import Action
from recorder.errors import KeyUnavailableError, RecordingIntegrityError
from recorder.keys import KEK_ENV, NEW_KEK_ENV, KeyStore, destroy_data_key
from recorder.manifest import parse_iso
from recorder.reader import RecordingReader
from recorder.store import RecordingStore

from . import synthetic


def media_digest(data_dir, rid) -> dict[str, str]:
    d = data_dir / "recordings" / rid
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("track-*.seg"))}


def wrapped(data_dir, rid) -> dict:
    return json.loads((data_dir / "recordings" / rid / "key.json").read_text())


def test_default_kek_generated_once_with_mode_0600(data_dir):
    with pytest.raises(KeyUnavailableError, match="no recording key-encryption key"):
        KeyStore.open(data_dir, environ={})  # reading never invents a key
    a = KeyStore.open(data_dir, environ={}, create=True)
    path = data_dir / "recording.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text())) == 32
    b = KeyStore.open(data_dir, environ={}, create=True)
    assert a.current() == b.current()


def test_wrong_kek_cannot_open_and_is_audited(record, data_dir, audit, tmp_path):
    rid = record().id
    other = tmp_path / "other.kek"
    other.write_text(base64.b64encode(os.urandom(32)).decode())
    other.chmod(0o600)
    store = RecordingStore(data_dir, keys=KeyStore.open(data_dir, kek_file=other, environ={}), audit=audit)
    with pytest.raises(KeyUnavailableError, match="not the configured KEK"):
        store.open_reader(rid, actor="trainer-7", purpose=Action.REPLAY)
    last = list(audit.authentic_entries())[-1]
    assert (last["action"], last["actor"], last["target"]) == (Action.ACCESS_FAILED, "trainer-7", rid)
    assert last["details"]["purpose"] == Action.REPLAY


def test_replay_is_audited(record, data_dir, keys, audit):
    rid = record().id
    reader = RecordingStore(data_dir, keys=keys, audit=audit).open_reader(rid, actor="trainer-7", purpose=Action.REPLAY)
    assert sum(1 for _ in reader.items()) > 100
    last = list(audit.authentic_entries())[-1]
    assert (last["action"], last["actor"], last["target"]) == (Action.REPLAY, "trainer-7", rid)


def test_rotation_rewraps_without_touching_media_and_retires_the_old_kek(record, data_dir, keys, audit):
    closed = [record(seed=i).id for i in range(3)]
    live = record(close=False)  # still recording while the key rotates
    old_id, old_kek = keys.current()
    before = {rid: media_digest(data_dir, rid) for rid in closed}

    result = RecordingStore(data_dir, keys=keys, audit=audit).rotate_key(actor="admin")
    assert result.completed and not result.problems
    assert sorted(result.rewrapped) == sorted(closed + [live.id])
    new_id, new_kek = keys.current()
    assert new_id != old_id and new_id == result.new_kek_id
    assert not (data_dir / "recording.kek.next").exists()
    assert stat.S_IMODE((data_dir / "recording.kek").stat().st_mode) == 0o600

    synthetic.write(live, synthetic.session(3000, seed=9))  # the live writer is unaffected
    live.close()
    for rid in closed + [live.id]:
        assert RecordingReader.open(data_dir, rid, keys).verify().status == "complete"
        assert wrapped(data_dir, rid)["kek_id"] == new_id
    assert all(media_digest(data_dir, rid) == before[rid] for rid in closed)  # media never re-encrypted

    # The old KEK opens nothing: not through the key store, not by unwrapping directly.
    old_store = KeyStore.open(data_dir, environ={KEK_ENV: base64.b64encode(old_kek).decode()})
    for rid in closed + [live.id]:
        with pytest.raises(KeyUnavailableError):
            RecordingReader.open(data_dir, rid, old_store)
        w = wrapped(data_dir, rid)
        with pytest.raises(InvalidTag):
            crypto.unwrap_data_key(old_kek, rid, base64.b64decode(w["nonce"]), base64.b64decode(w["wrapped"]))
    entry = list(audit.authentic_entries())[-2]  # the last one is record.stop of the live recording
    assert entry["action"] == Action.KEY_ROTATE and entry["details"]["rewrapped"] == 4


def test_interrupted_rotation_keeps_everything_readable_and_resumes(record, data_dir, keys, audit):
    good = [record(seed=i).id for i in range(2)]
    broken = record(seed=5).id
    key_file = data_dir / "recordings" / broken / "key.json"
    saved = key_file.read_bytes()
    doc = json.loads(saved)
    doc["wrapped"] = base64.b64encode(os.urandom(48)).decode()
    key_file.write_text(json.dumps(doc))
    old_id, _ = keys.current()

    store = RecordingStore(data_dir, keys=keys, audit=audit)
    result = store.rotate_key(actor="admin")
    assert not result.completed and broken in result.problems
    assert keys.current()[0] == old_id  # old KEK kept
    assert (data_dir / "recording.kek.next").exists()
    for rid in good:  # already re-wrapped under the pending KEK, still readable mid-rotation
        assert wrapped(data_dir, rid)["kek_id"] == result.new_kek_id
        assert RecordingReader.open(data_dir, rid, keys).verify().status == "complete"
    # Meanwhile a new recording is wrapped under the current (old) KEK, and the rerun picks it up.
    newer = record(seed=6).id
    assert wrapped(data_dir, newer)["kek_id"] == old_id

    key_file.write_bytes(saved)  # the operator repairs the key file
    result2 = store.rotate_key(actor="admin")
    assert result2.completed and result2.new_kek_id == result.new_kek_id
    assert sorted(result2.already_done) == sorted(good) and sorted(result2.rewrapped) == sorted([broken, newer])
    for rid in good + [broken, newer]:
        assert RecordingReader.open(data_dir, rid, keys).verify().status == "complete"


def test_kek_from_environment(data_dir, audit):
    kek1, kek2 = os.urandom(32), os.urandom(32)
    env1 = {KEK_ENV: base64.b64encode(kek1).decode()}
    keys = KeyStore.open(data_dir, environ=env1)
    from recorder.writer import RecordingWriter
    writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=synthetic.tracks(), audit=audit, actor="d")
    synthetic.write(writer, synthetic.session(1000))
    writer.close()
    assert not (data_dir / "recording.kek").exists()  # no key file when the environment provides it
    with pytest.raises(KeyUnavailableError, match=NEW_KEK_ENV):
        keys.rotate()
    rotating = KeyStore.open(data_dir, environ=env1 | {NEW_KEK_ENV: base64.b64encode(kek2).decode()})
    assert rotating.rotate().completed
    new_keys = KeyStore.open(data_dir, environ={KEK_ENV: base64.b64encode(kek2).decode()})
    assert RecordingReader.open(data_dir, writer.id, new_keys).verify().status == "complete"
    with pytest.raises(KeyUnavailableError):
        RecordingReader.open(data_dir, writer.id, keys)
    with pytest.raises(KeyUnavailableError, match="not a base64-encoded 32-byte key"):
        KeyStore.open(data_dir, environ={KEK_ENV: "c2hvcnQ="})


def test_purge_shreds_expired_recordings_and_keeps_the_rest(record, data_dir, keys, audit):
    old, new = record(seed=1).id, record(seed=2).id
    live = record(seed=3, close=False)
    newest = parse_iso(json.loads((data_dir / "recordings" / live.id / "manifest.json").read_text())["created"])
    now = newest + dt.timedelta(days=31)
    store = RecordingStore(data_dir, keys=keys, audit=audit)
    dry = store.purge(30, actor="retention", dry_run=True, now=now)
    assert (data_dir / "recordings" / old).exists()

    result = store.purge(30, actor="retention", now=now)
    assert result.purged == dry.purged == sorted([old, new])
    assert result.skipped == {live.id: "still recording"}
    assert not (data_dir / "recordings" / old).exists()
    live.close()
    assert RecordingReader.open(data_dir, live.id, keys).verify().status == "complete"

    entries = [e for e in audit.authentic_entries() if e["action"] == Action.PURGE]
    assert {e["target"] for e in entries} == {old, new}
    assert all(e["details"]["data_key_destroyed"] for e in entries)


def test_purge_cut_off(record, data_dir, keys, audit):
    a, b = record(seed=1).id, record(seed=2).id
    ca, cb = (parse_iso(json.loads((data_dir / "recordings" / r / "manifest.json").read_text())["created"])
              for r in (a, b))
    assert cb > ca
    now = cb + dt.timedelta(days=7)
    cut_between = (now - (ca + (cb - ca) / 2)) / dt.timedelta(days=1)  # older_than that separates a from b
    result = RecordingStore(data_dir, keys=keys, audit=audit).purge(cut_between, actor="retention", now=now)
    assert result.purged == [a]
    assert (data_dir / "recordings" / b).exists()


def test_shredded_recording_is_unreadable_and_purge_finishes_remnants(record, data_dir, keys, audit):
    rid = record().id
    assert destroy_data_key(data_dir / "recordings" / rid)  # a purge that died right after shredding
    with pytest.raises(KeyUnavailableError, match="data key is gone"):
        RecordingReader.open(data_dir, rid, keys)
    assert RecordingStore(data_dir).list()[0].state == "shredded"
    (data_dir / "recordings" / rid / "manifest.json").unlink()  # ... or part-way through deleting files
    result = RecordingStore(data_dir, keys=keys, audit=audit).purge(365, actor="retention")
    assert result.purged == [rid] and not (data_dir / "recordings" / rid).exists()


def test_tampered_key_file_is_an_integrity_error(record, data_dir, keys):
    rid = record().id
    path = data_dir / "recordings" / rid / "key.json"
    doc = json.loads(path.read_text())
    raw = bytearray(base64.b64decode(doc["wrapped"]))
    raw[0] ^= 1
    doc["wrapped"] = base64.b64encode(bytes(raw)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(RecordingIntegrityError):
        RecordingReader.open(data_dir, rid, keys)
