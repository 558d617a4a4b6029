"""`python -m recorder` as an operator runs it: output and exit codes."""

from __future__ import annotations

import json

from .conftest import run_cli
from .test_tamper import VIDEO, split_segments, track_path


def test_list_and_verify(record, data_dir):
    complete = record(seed=1).id
    open_ = record(seed=2, close=False)
    open_._release()  # as if its process had died

    result = run_cli(data_dir, "list")
    assert result.returncode == 0
    assert complete in result.stdout and "closed" in result.stdout and "open" in result.stdout
    listed = {r["id"]: r for r in json.loads(run_cli(data_dir, "list", "--json").stdout)}
    assert (listed[complete]["state"], listed[complete]["room"], listed[complete]["tracks"]) == ("closed", "r1", 4)

    result = run_cli(data_dir, "verify", complete)
    assert result.returncode == 0, result.stderr
    assert "status: complete" in result.stdout and "patient-video" in result.stdout
    assert run_cli(data_dir, "verify", open_.id).returncode == 3
    doc = json.loads(run_cli(data_dir, "verify", complete, "--json").stdout)
    assert doc["status"] == "complete" and len(doc["tracks"]) == 5


def test_verify_exit_codes_on_tampering_and_errors(record, data_dir):
    rid = record().id
    path = track_path(data_dir, rid, VIDEO)
    data = bytearray(path.read_bytes())
    data[len(split_segments(bytes(data))[0]) + 100] ^= 0x80
    path.write_bytes(data)
    result = run_cli(data_dir, "verify", rid)
    assert result.returncode == 1
    assert "TAMPERED: track 'patient-video' segment 1: authentication failed" in result.stdout
    assert "status: tampered" in result.stdout and result.stdout.count("TAMPERED") == 1

    assert run_cli(data_dir, "verify", "20200101T000000Z-0123456789ab").returncode == 2  # no such recording
    result = run_cli(data_dir, "verify", "../../etc")
    assert result.returncode == 2 and "not a recording id" in result.stderr
    assert run_cli(data_dir, "verify").returncode == 2  # usage
    (data_dir / "recording.kek").unlink()
    result = run_cli(data_dir, "verify", rid)
    assert result.returncode == 2 and "no recording key-encryption key" in result.stderr


def test_rotate_key(record, data_dir):
    rids = [record(seed=i).id for i in range(2)]
    old = (data_dir / "recording.kek").read_text()
    result = run_cli(data_dir, "rotate-key")
    assert result.returncode == 0, result.stderr
    assert "re-wrapped 2 data keys" in result.stdout and "retired" in result.stdout
    assert (data_dir / "recording.kek").read_text() != old
    assert all(run_cli(data_dir, "verify", rid).returncode == 0 for rid in rids)
    other = data_dir.parent / "old.kek"
    other.write_text(old)
    other.chmod(0o600)
    result = run_cli(data_dir, "verify", rids[0], "--kek-file", str(other))
    assert result.returncode == 2 and "not the configured KEK" in result.stderr


def test_purge(record, data_dir):
    rid = record().id
    result = run_cli(data_dir, "purge")
    assert result.returncode == 2 and "--older-than" in result.stderr  # no built-in retention period
    result = run_cli(data_dir, "purge", "--older-than", "30")
    assert result.stdout.strip().endswith("purged 0 recording(s) older than 30 days")
    result = run_cli(data_dir, "purge", "--older-than", "0", "--dry-run")
    assert result.returncode == 0 and f"would purge {rid}" in result.stdout
    assert (data_dir / "recordings" / rid).exists()
    result = run_cli(data_dir, "purge", env={"CONSULT_RECORDING_RETENTION_DAYS": "0"})
    assert result.returncode == 0 and f"purged {rid}" in result.stdout
    assert not (data_dir / "recordings" / rid).exists()


def test_audit_verify(record, data_dir, audit):
    record()
    run_cli(data_dir, "verify", record().id)
    result = run_cli(data_dir, "audit", "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 5 entries; head 5:")
    anchor = result.stdout.split("head ")[1].strip()
    assert run_cli(data_dir, "audit", "verify", "--expect", anchor).returncode == 0

    lines = audit.path.read_bytes().splitlines(keepends=True)
    audit.path.write_bytes(b"".join(lines[:1] + lines[2:]))
    result = run_cli(data_dir, "audit", "verify")
    assert result.returncode == 1 and "TAMPERED" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("FAILED")


def test_audit_verify_lists_torn_tails_and_refused_appends_are_resealed(record, data_dir, audit):
    rid = record().id
    with open(audit.path, "ab") as f:
        f.write(b'{"seq":3,"ti')  # a crash mid-append
    audit.append("doctor-1", "replay", "rec-x")  # cuts it off and logs that
    result = run_cli(data_dir, "audit", "verify")
    assert result.returncode == 0, result.stdout
    assert "note: seq 3: audit.torn_tail: 12 bytes of an interrupted append" in result.stdout
    assert json.loads(run_cli(data_dir, "audit", "verify", "--json").stdout)["torn_tails"] == [3]

    lines = audit.path.read_bytes().splitlines(keepends=True)
    audit.path.write_bytes(b"".join(lines[:-1]))  # the newest entry removed
    result = run_cli(data_dir, "verify", rid)  # what would append is refused, and says why
    assert "could not audit" in result.stderr and "appends are refused" in result.stderr, result.stderr
    assert "entries removed from the end" in run_cli(data_dir, "audit", "verify").stdout
    assert run_cli(data_dir, "audit", "reseal").returncode == 2  # a reason is required
    result = run_cli(data_dir, "audit", "reseal", "--reason", "no backup of the lost entry", "--actor", "cli:ops")
    assert result.returncode == 0 and result.stdout.startswith("resealed at seq 4: the log ends at seq 3")
    result = run_cli(data_dir, "audit", "verify")
    assert result.returncode == 0 and "note: seq 4: RESEALED by cli:ops" in result.stdout, result.stdout
    assert "nothing to reseal" in run_cli(data_dir, "audit", "reseal", "--reason", "x").stdout
