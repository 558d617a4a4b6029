"""The audit log: chained, keyed, and every kind of tampering detected (and what is not)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from recorder.audit import GENESIS, MAX_FIELD_CHARS, Action, AuditLog
from recorder.errors import KeyUnavailableError, RecordingIntegrityError
from recorder.store import RecordingStore

from .conftest import ROOT


def filled(audit: AuditLog, n: int = 6) -> list[bytes]:
    for i in range(n):
        audit.append(f"doctor-{i}", Action.REPLAY, f"rec-{i}", {"i": i})
    return audit.path.read_bytes().splitlines(keepends=True)


def rewrite(audit: AuditLog, lines: list[bytes]) -> None:
    audit.path.write_bytes(b"".join(lines))


def test_entries_chain_and_verify(audit):
    lines = filled(audit)
    entries = [json.loads(line) for line in lines]
    assert [e["seq"] for e in entries] == list(range(1, 7))
    assert entries[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(entries, entries[1:]))
    assert set(entries[0]) == {"seq", "time", "actor", "action", "target", "details", "prev", "hash"}
    report = audit.verify()
    assert report.ok and report.entries == 6 and report.last_seq == 6 and report.last_hash == entries[-1]["hash"]


def test_edit_is_detected(audit):
    lines = filled(audit)
    lines[2] = lines[2].replace(b'"doctor-2"', b'"doctor-9"')
    rewrite(audit, lines)
    report = audit.verify()
    assert report.problems == ["line 3 (seq 3): hash mismatch: entry edited (or written without the audit key)"]


def test_deletion_insertion_and_reordering_are_detected(audit):
    lines = filled(audit)
    for tampered, expect in [
        (lines[:2] + lines[3:], "seq 4 where 3 was expected"),  # deletion
        (lines[:3] + [lines[1]] + lines[3:], "seq 2 where 4 was expected"),  # insertion (a replayed entry)
        (lines[:2] + [lines[3], lines[2]] + lines[4:], "seq 4 where 3 was expected"),  # reordering
        (lines[1:], "seq 2 where 1 was expected"),  # the first entry removed
    ]:
        rewrite(audit, tampered)
        report = audit.verify()
        assert not report.ok and any(expect in p for p in report.problems), report.problems


def test_tail_truncation_is_detected_through_the_head(audit):
    lines = filled(audit)
    rewrite(audit, lines[:-2])
    report = audit.verify()
    assert report.problems == ["the log ends at seq 4 but the head records seq 6: entries removed from the end"]
    audit.head_path.unlink()  # removing the head too does not help
    assert any("audit.head is missing" in p for p in audit.verify().problems)


def test_rollback_of_log_and_head_needs_an_external_anchor(audit):
    # What the file alone cannot show: the log and head both put back to an earlier copy.
    filled(audit, 3)
    old_log, old_head = audit.path.read_bytes(), audit.head_path.read_bytes()
    filled(audit, 3)
    anchor = audit.verify()
    audit.path.write_bytes(old_log)
    audit.head_path.write_bytes(old_head)
    assert audit.verify().ok  # undetectable without something kept elsewhere...
    report = audit.verify(expect=(anchor.last_seq, anchor.last_hash))
    assert report.problems == [f"expected entry 6 with hash {anchor.last_hash[:16]}…: not in the log"]


def test_an_attacker_without_the_key_cannot_recompute_the_chain(audit):
    lines = filled(audit)
    entries = [json.loads(line) for line in lines]
    entries[2]["actor"] = "someone-else"
    prev = GENESIS
    for e in entries:  # recompute every hash the way a plain (unkeyed) hash chain would allow
        e["prev"] = prev
        body = {k: v for k, v in e.items() if k != "hash"}
        e["hash"] = prev = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    rewrite(audit, [json.dumps(e).encode() + b"\n" for e in entries])
    assert len(audit.verify().problems) >= 6


def test_torn_last_line_is_cut_off_and_logged(audit):
    filled(audit, 3)
    with open(audit.path, "ab") as f:
        f.write(b'{"seq":4,"time":"2025-')  # a crash mid-append: audit.head still names seq 3
    report = audit.verify()
    assert report.ok and "incomplete" in report.notes[0]
    audit.append("doctor-1", Action.REPLAY, "rec-x")
    entries = [json.loads(line) for line in audit.path.read_bytes().splitlines()]
    assert [e["action"] for e in entries[-2:]] == [Action.TORN_TAIL, Action.REPLAY]
    assert entries[-2]["details"]["discarded_bytes"] == 22 and entries[-2]["details"]["head_seq"] == 3
    report = audit.verify()
    assert report.ok and report.torn_tails == [4]
    assert any(n.startswith("seq 4: audit.torn_tail: 22 bytes") for n in report.notes), report.notes


def test_an_entry_that_lost_its_newline_is_restored_not_replaced(audit):
    # The attack: strip the final newline, let anything append, and the authentic last
    # entry used to be cut off as a "torn tail".
    lines = filled(audit)
    last = json.loads(lines[-1])
    audit.path.write_bytes(b"".join(lines)[:-1])
    report = audit.verify()
    assert report.ok and report.entries == 6 and report.last_seq == 6, report.problems
    assert "seq 6: its line lacks the final newline" in report.notes[0]
    audit.append("doctor-1", Action.REPLAY, "rec-x")
    entries = [json.loads(line) for line in audit.path.read_bytes().splitlines()]
    assert entries[5] == last  # still there, byte for byte
    assert [e["action"] for e in entries[5:]] == [Action.REPLAY, Action.REPLAY] and entries[6]["seq"] == 7
    report = audit.verify()
    assert report.ok and report.entries == 7 and report.torn_tails == []


def test_a_damaged_last_entry_is_not_taken_for_a_crash(audit):
    lines = filled(audit)
    tampered = b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]  # newline gone, the entry cut short
    audit.path.write_bytes(tampered)
    with pytest.raises(RecordingIntegrityError, match="ends at seq 5 but audit.head records seq 6.*damaged last line"):
        audit.append("doctor-1", Action.REPLAY, "rec-x")
    assert audit.path.read_bytes() == tampered  # nothing cut, nothing written
    assert not audit.verify().ok


def test_appends_refuse_to_continue_from_a_truncated_log(audit):
    lines = filled(audit)
    rewrite(audit, lines[:-2])
    with pytest.raises(RecordingIntegrityError, match="ends at seq 4 but audit.head records seq 6.*refused"):
        audit.append("doctor-1", Action.REPLAY, "rec-x")
    assert audit.path.read_bytes() == b"".join(lines[:-2])
    assert "ends at seq 4" in (audit.tail_problem() or "")
    audit.head_path.unlink()  # removing the head too does not make the log look new
    with pytest.raises(RecordingIntegrityError, match="audit.head is missing while the log has 4 entries"):
        audit.append("doctor-1", Action.REPLAY, "rec-x")


def test_a_forged_head_stops_appends(audit):
    filled(audit, 3)
    head = json.loads(audit.head_path.read_bytes())
    audit.head_path.write_text(json.dumps(head | {"seq": 2}))
    with pytest.raises(RecordingIntegrityError, match="audit.head fails authentication"):
        audit.append("doctor-1", Action.REPLAY, "rec-x")


def test_a_head_one_entry_behind_is_a_crash_not_tampering(audit):
    filled(audit, 3)
    old_head = audit.head_path.read_bytes()
    audit.append("doctor-1", Action.REPLAY, "rec-x")
    audit.head_path.write_bytes(old_head)  # as if the process died between the log's fsync and the head's
    assert audit.tail_problem() is None
    assert audit.append("doctor-1", Action.REPLAY, "rec-y")["seq"] == 5
    assert audit.verify().ok


def test_a_loss_is_resealed_on_record_and_listed_by_verify(audit):
    lines = filled(audit)
    rewrite(audit, lines[:-2])
    entry = audit.reseal("cli:ops", "restored from last night's backup")
    assert entry is not None and (entry["seq"], entry["prev"]) == (5, json.loads(lines[3])["hash"])
    assert entry["details"]["head_seq"] == 6 and entry["details"]["log_seq"] == 4
    assert audit.append("doctor-1", Action.REPLAY, "rec-x")["seq"] == 6
    report = audit.verify()
    assert report.ok and report.reseals == [5]
    assert any("seq 5: RESEALED by cli:ops: the log ends at seq 4" in n for n in report.notes), report.notes
    assert audit.reseal("cli:ops", "again") is None  # nothing left to reseal


def test_every_string_field_is_capped(audit):
    long_id = "u" * 5000  # e.g. a forged token's identity in a refusal entry
    audit.append("x" * 10_000, Action.ACCESS_FAILED, "t" * 3000,
                 {"error": "e" * 8000, "tried": ["p" * 900, {"k" * 600: "v" * 700}], "n": 3})
    line = audit.path.read_bytes().splitlines()[-1]
    assert len(line) < 12 * MAX_FIELD_CHARS
    entry = json.loads(line)
    assert len(entry["actor"]) == MAX_FIELD_CHARS and entry["actor"].endswith("…[truncated from 10000 chars]")
    assert entry["target"].startswith("ttt") and entry["target"].endswith("…[truncated from 3000 chars]")
    assert entry["details"]["error"].endswith("…[truncated from 8000 chars]") and entry["details"]["n"] == 3
    nested = entry["details"]["tried"]
    assert len(nested[0]) == MAX_FIELD_CHARS and all(len(k) <= MAX_FIELD_CHARS for k in nested[1])
    returned = audit.append(long_id, Action.REPLAY, "r")
    assert returned == json.loads(audit.path.read_bytes().splitlines()[-1])  # callers get what was logged
    assert len(returned["actor"]) == MAX_FIELD_CHARS
    assert audit.verify().ok


def test_concurrent_appenders_in_separate_processes(data_dir, audit):
    code = ("import sys; from pathlib import Path; from recorder.audit import AuditLog; "
            "a = AuditLog.open(Path(sys.argv[1]), environ={}); "
            "[a.append(f'p{sys.argv[2]}', 'replay', str(i)) for i in range(25)]")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir), str(n)], cwd=ROOT) for n in range(4)]
    assert all(p.wait(60) == 0 for p in procs)
    report = audit.verify()
    assert report.ok and report.entries == 100


def test_recording_lifecycle_is_audited_and_cross_checked(record, data_dir, keys, audit):
    writer = record()
    entries = [e for e in audit.authentic_entries() if e["target"] == writer.id]
    assert [e["action"] for e in entries] == [Action.RECORD_START, Action.RECORD_STOP]
    assert entries[0]["actor"] == "doctor-1" and entries[0]["details"]["room"] == "r1"
    assert entries[1]["details"]["segments"]["patient-video"] > 5
    store = RecordingStore(data_dir, keys=keys, audit=audit)
    assert store.audit_verify().ok
    # Dropping the start entry (and re-chaining is impossible without the key): flagged either way.
    lines = audit.path.read_bytes().splitlines(keepends=True)
    rewrite(audit, [line for line in lines if b"record.start" not in line])
    report = store.audit_verify()
    assert any(f"recording {writer.id} has no record.start entry" in p for p in report.problems)


def test_audit_key_is_not_replaced_when_a_log_exists(data_dir, audit):
    filled(audit, 1)
    (data_dir / "audit.key").unlink()
    with pytest.raises(KeyUnavailableError, match="restore its key"):
        AuditLog.open(data_dir, environ={}, create=True)
