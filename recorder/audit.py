"""Append-only, hash-chained audit log of who did what to which recording.

`<data dir>/audit.log` is JSON lines; each entry is
    {"seq", "time", "actor", "action", "target", "details", "prev", "hash"}
where `hash` = HMAC-SHA256(audit key, canonical JSON of the other fields) and `prev`
is the previous entry's hash (64 zeros for seq 1). So an edit breaks that entry's
hash, a deletion, insertion or reordering breaks `seq`/`prev` continuity.

Why an HMAC, and why its own key. A plain hash chain can be recomputed by anyone
who edits the file; keyed, only a holder of the audit key can forge entries. The
key is separate from the KEK (`<data dir>/audit.key`, 0600, or CONSULT_AUDIT_KEY):
rotating the KEK must not force rewriting an append-only log, and an auditor can
verify the log without being able to decrypt a single recording. On the embedded
default both keys sit in the data directory, so someone with root on the host can
still rewrite history; for that threat keep the audit key elsewhere (environment /
secret store) and anchor the head externally (`audit verify` prints it, `--expect`
checks it).

The tail. Deleting the last entries leaves a valid chain, so after every append the
writer also records the head (seq, hash) in `audit.head`, MACed with the same key.
Verification then detects removal of any suffix, unless the attacker also holds the
audit key or puts back an older copy of audit.head together with the matching log
prefix; an externally recorded head (`--expect SEQ:HASH`) catches that rollback too.
A line torn by a crash mid-append is cut off by the next append, which logs that it did.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import KeyUnavailableError, RecordingIntegrityError, RecordingStorageError
from .fsutil import FILE_MODE, atomic_write, make_private_dir, write_all
from .keys import decode_kek, encode_kek
from .manifest import utc_now_iso

AUDIT_LOG_FILE = "audit.log"
AUDIT_HEAD_FILE = "audit.head"
AUDIT_KEY_FILE = "audit.key"
AUDIT_KEY_ENV = "CONSULT_AUDIT_KEY"
GENESIS = "0" * 64
MAX_DETAILS_BYTES = 16 * 1024
_TAIL_READ = 64 * 1024  # an entry is always smaller (details are capped)
_FIELDS = {"seq", "time", "actor", "action", "target", "details", "prev", "hash"}


class Action:
    RECORD_START = "record.start"
    RECORD_STOP = "record.stop"
    RECORD_FAILED = "record.failed"
    REPLAY = "replay"
    EXPORT = "export"
    VERIFY = "verify"
    KEY_ROTATE = "key.rotate"
    PURGE = "purge"
    ACCESS_FAILED = "access.failed"
    TORN_TAIL = "audit.torn_tail"


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class AuditReport:
    entries: int = 0
    last_seq: int = 0  # with last_hash: the head to anchor externally (`--expect`)
    last_hash: str = GENESIS
    head_seq: int = 0  # as recorded in audit.head
    problems: list[str] = field(default_factory=list)  # any of these means the log was tampered with
    notes: list[str] = field(default_factory=list)  # explained, harmless (crash artefacts)
    starts: set[str] = field(default_factory=set)  # targets of record.start entries (for cross-checks)

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    def __init__(self, data_dir: Path, key: bytes) -> None:
        self.path = data_dir / AUDIT_LOG_FILE
        self.head_path = data_dir / AUDIT_HEAD_FILE
        self._key = key

    @classmethod
    def open(cls, data_dir: Path, *, key_file: Optional[Path] = None, environ: Mapping[str, str] = os.environ,
             create: bool = False) -> "AuditLog":
        """The data directory's audit log. `create` generates the key only while there is no log yet:
        a new key for an existing log would make all of it unverifiable."""
        if environ.get(AUDIT_KEY_ENV):
            return cls(data_dir, decode_kek(environ[AUDIT_KEY_ENV], AUDIT_KEY_ENV))
        path = key_file or data_dir / AUDIT_KEY_FILE
        try:
            return cls(data_dir, decode_kek(path.read_text(), str(path)))
        except FileNotFoundError:
            pass
        log_exists = (data_dir / AUDIT_LOG_FILE).exists() and (data_dir / AUDIT_LOG_FILE).stat().st_size > 0
        if not create or log_exists:
            raise KeyUnavailableError(f"no audit key at {path}"
                                      + (" (the audit log exists: restore its key)" if log_exists else ""))
        try:
            make_private_dir(path.parent)
            atomic_write(path, (encode_kek(os.urandom(32)) + "\n").encode(), exclusive=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot create the audit key", exc) from exc
        return cls(data_dir, decode_kek(path.read_text(), str(path)))

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def _head_mac(self, seq: int, digest: str) -> str:
        return self._mac(f"head\0{seq}\0{digest}".encode())

    # -- writing -----------------------------------------------------------------------------------

    def append(self, actor: str, action: str, target: str,
               details: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """Append one entry durably. Raises RecordingStorageError if it cannot be written."""
        details = dict(details or {})
        if len(_canonical(details)) > MAX_DETAILS_BYTES:
            raise ValueError("audit details too large")
        try:
            with self._locked() as fd:
                seq, prev = self._tail(fd)
                entry = self._write_entry(fd, seq + 1, prev, actor, action, target, details)
                return entry
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot write the audit log", exc) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        make_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one appender at a time, across processes
            yield fd
        finally:
            os.close(fd)

    def _tail(self, fd: int) -> tuple[int, str]:
        """(seq, hash) of the last entry; cuts off a line torn by a crash and logs that."""
        size = os.fstat(fd).st_size
        if size == 0:
            return 0, GENESIS
        start = max(0, size - _TAIL_READ)
        tail = os.pread(fd, size - start, start)
        torn = b""
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1  # 0 if the only line is torn
            if cut == 0 and start > 0:
                raise RecordingIntegrityError(f"{self.path}: last line longer than any entry; run `audit verify`")
            torn = tail[cut:]
            os.ftruncate(fd, start + cut)
            os.fsync(fd)
            tail = tail[:cut]
        if tail:
            lines = tail.rstrip(b"\n").split(b"\n")
            if len(lines) == 1 and start > 0:
                raise RecordingIntegrityError(f"{self.path}: last line longer than any entry; run `audit verify`")
            try:
                last = json.loads(lines[-1])
                seq, prev = int(last["seq"]), str(last["hash"])
            except (ValueError, KeyError, TypeError):
                raise RecordingIntegrityError(f"{self.path}: last entry is corrupt; run `audit verify`") from None
        else:
            seq, prev = 0, GENESIS
        if torn:
            entry = self._write_entry(fd, seq + 1, prev, "consult-sfu", Action.TORN_TAIL, str(self.path.name),
                                      {"discarded_bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest()})
            seq, prev = entry["seq"], entry["hash"]
        return seq, prev

    def _write_entry(self, fd: int, seq: int, prev: str, actor: str, action: str, target: str,
                     details: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"seq": seq, "time": utc_now_iso(), "actor": actor, "action": action,
                                 "target": target, "details": details, "prev": prev}
        entry["hash"] = self._mac(_canonical(entry))
        write_all(fd, _canonical(entry) + b"\n")
        os.fsync(fd)
        head = {"seq": seq, "hash": entry["hash"], "mac": self._head_mac(seq, entry["hash"])}
        atomic_write(self.head_path, _canonical(head) + b"\n")
        return entry

    # -- reading -----------------------------------------------------------------------------------

    def authentic_entries(self) -> Iterator[dict[str, Any]]:
        """Entries whose own HMAC verifies (each on its own; verify() checks the chain)."""
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        body = {k: v for k, v in entry.items() if k != "hash"}
                        if (set(entry) == _FIELDS
                                and hmac.compare_digest(str(entry["hash"]), self._mac(_canonical(body)))):
                            yield entry
                    except (ValueError, AttributeError):
                        continue
        except FileNotFoundError:
            return

    def verify(self, expect: Optional[tuple[int, str]] = None) -> AuditReport:
        report = AuditReport()
        hashes: dict[int, str] = {}
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        lines = raw.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline
        expected_seq, prev = 1, GENESIS
        for lineno, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                seq, digest = int(entry["seq"]), str(entry["hash"])
            except (ValueError, KeyError, TypeError):
                report.problems.append(f"line {lineno}: not an audit entry (edited)")
                expected_seq += 1
                continue
            problem = self._check_entry(entry, expected_seq, prev)
            if problem:
                report.problems.append(f"line {lineno} (seq {seq}): {problem}")
            elif entry["action"] == Action.RECORD_START:
                report.starts.add(entry["target"])
            # Resynchronise on this entry, so one edit is reported once, not as a cascade.
            hashes[seq] = digest
            expected_seq, prev = seq + 1, digest
            report.entries += 1
        if torn:
            report.notes.append(f"last line is incomplete ({len(torn)} bytes, a crash during an append); "
                                "the next append cuts it off")
        if hashes:
            report.last_seq = expected_seq - 1
            report.last_hash = hashes.get(report.last_seq, "")
        self._check_head(report, hashes)
        if expect is not None:
            seq, digest = expect
            if hashes.get(seq) != digest:
                report.problems.append(f"expected entry {seq} with hash {digest[:16]}…: "
                                       + ("different hash" if seq in hashes else "not in the log"))
        return report

    def _check_entry(self, entry: Any, expected_seq: int, prev: str) -> Optional[str]:
        if not isinstance(entry, dict) or set(entry) != _FIELDS:
            return "not an audit entry (fields changed)"
        body = {k: v for k, v in entry.items() if k != "hash"}
        if not hmac.compare_digest(str(entry["hash"]), self._mac(_canonical(body))):
            return "hash mismatch: entry edited (or written without the audit key)"
        if entry["seq"] != expected_seq:
            return f"seq {entry['seq']} where {expected_seq} was expected: entries deleted, inserted or reordered"
        if entry["prev"] != prev:
            return "does not chain to the entry before it: entries deleted, inserted or reordered"
        return None

    def _check_head(self, report: AuditReport, hashes: dict[int, str]) -> None:
        try:
            head = json.loads(self.head_path.read_bytes())
            seq, digest, mac = int(head["seq"]), str(head["hash"]), str(head["mac"])
        except FileNotFoundError:
            if hashes:
                report.problems.append(
                    f"{AUDIT_HEAD_FILE} is missing: removal of entries from the end cannot be ruled out")
            return
        except (ValueError, KeyError, TypeError):
            report.problems.append(f"{AUDIT_HEAD_FILE} is corrupt")
            return
        report.head_seq = seq
        if not hmac.compare_digest(mac, self._head_mac(seq, digest)):
            report.problems.append(f"{AUDIT_HEAD_FILE} fails authentication (edited)")
        elif seq > report.last_seq:
            report.problems.append(f"the log ends at seq {report.last_seq} but the head records seq {seq}: "
                                   "entries removed from the end")
        elif hashes.get(seq) != digest:
            report.problems.append(f"entry {seq} does not match the head: the log was rewritten")
        elif seq < report.last_seq:
            n = report.last_seq - seq
            report.notes.append(f"{n} authenticated entr{'y' if n == 1 else 'ies'} after the recorded head "
                                "(a crash between append and head update)")
