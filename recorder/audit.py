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
writer also records the head (seq, hash) in `audit.head`, MACed with the same key and
fsync'd like the log. Verification then detects removal of any suffix, unless the
attacker also holds the audit key or puts back an older copy of audit.head together with
the matching log prefix; an externally recorded head (`--expect SEQ:HASH`) catches that
rollback too. Every append checks the tail against the head first and refuses to go on
numbering from a log that lost entries (or whose head is missing or forged): the
operator restores the log from a backup, or records the loss with `audit reseal`.

A last line without its newline is either an authentic entry (only the newline is gone:
it is restored, never replaced) or the start of an append that a crash interrupted
(audit.head still names the entry before it): only then is it cut off, and the cut is
logged as an `audit.torn_tail` entry that `audit verify` lists. Anything else at the end
(the newline stripped and the last entry damaged) is tampering and stops appends.

Field sizes. Actors, targets and refusal details can be attacker-chosen (a forged
token's identity, a URL): every string written to an entry is capped at
MAX_FIELD_CHARS and marked as truncated, so a refusal cannot bloat the log.
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
MAX_FIELD_CHARS = 256  # per string (actor, target, every string in details): attacker-chosen ones stay small
_TAIL_READ = 64 * 1024  # an entry is always smaller (details are capped)
_FIELDS = {"seq", "time", "actor", "action", "target", "details", "prev", "hash"}
_REFUSED = ("appends are refused until it is restored from a backup, or the loss is recorded with "
            "`python -m recorder audit reseal --reason TEXT`; see `python -m recorder audit verify`")


class Action:
    RECORD_START = "record.start"
    RECORD_STOP = "record.stop"
    RECORD_FAILED = "record.failed"
    RECORD_CONSENT = "record.consent"  # a participant continued (or left) when told of a recording
    REPLAY = "replay"
    EXPORT = "export"
    VERIFY = "verify"
    KEY_ROTATE = "key.rotate"
    PURGE = "purge"
    ACCESS_FAILED = "access.failed"
    TORN_TAIL = "audit.torn_tail"
    RESEAL = "audit.resealed"


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def capped(value: Any) -> Any:
    """`value` with every string (dict keys too) cut to MAX_FIELD_CHARS, marked as truncated.
    Idempotent: a capped string is MAX_FIELD_CHARS long at most, marker included."""
    if isinstance(value, str):
        if len(value) <= MAX_FIELD_CHARS:
            return value
        marker = f"…[truncated from {len(value)} chars]"
        return value[:MAX_FIELD_CHARS - len(marker)] + marker
    if isinstance(value, Mapping):
        return {capped(str(k)): capped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [capped(v) for v in value]
    return value


def _capped_details(details: Mapping[str, Any]) -> dict[str, Any]:
    return {capped(str(k)): capped(v) for k, v in details.items()}


@dataclass
class AuditReport:
    entries: int = 0
    last_seq: int = 0  # with last_hash: the head to anchor externally (`--expect`)
    last_hash: str = GENESIS
    head_seq: int = 0  # as recorded in audit.head
    problems: list[str] = field(default_factory=list)  # any of these means the log was tampered with
    notes: list[str] = field(default_factory=list)  # explained, harmless (crash artefacts), or recorded losses
    starts: set[str] = field(default_factory=set)  # targets of record.start entries (for cross-checks)
    torn_tails: list[int] = field(default_factory=list)  # seq of every audit.torn_tail entry
    reseals: list[int] = field(default_factory=list)  # seq of every audit.resealed entry

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Tail:
    """The end of the log as an appender finds it (under the lock), checked against audit.head."""
    seq: int = 0  # the last entry (a restorable unterminated one included)
    digest: str = GENESIS
    cut: int = 0  # file length without the torn bytes
    torn: bytes = b""  # an unterminated last line
    torn_is_entry: bool = False  # ...that is the next authentic, chained entry: only its newline is missing
    last_prev: Optional[str] = None  # the last entry's `prev` (to check a head one entry behind)
    head: Optional[tuple[int, str]] = None
    problem: Optional[str] = None  # tampering: appends must not go on from here


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

    def _authentic(self, entry: Any) -> bool:
        """The entry's own HMAC verifies (not whether it chains)."""
        if not isinstance(entry, dict) or set(entry) != _FIELDS:
            return False
        body = {k: v for k, v in entry.items() if k != "hash"}
        return hmac.compare_digest(str(entry["hash"]), self._mac(_canonical(body)))

    # -- writing -----------------------------------------------------------------------------------

    def append(self, actor: str, action: str, target: str,
               details: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """Append one entry durably. Raises RecordingStorageError if it cannot be written, and
        RecordingIntegrityError if the log's end does not match its head (entries removed)."""
        details = _capped_details(details or {})
        if len(_canonical(details)) > MAX_DETAILS_BYTES:
            raise ValueError("audit details too large")
        try:
            with self._locked() as fd:
                tail = self._inspect_tail(fd)
                if tail.problem:
                    raise RecordingIntegrityError(f"{self.path}: {tail.problem}; {_REFUSED}")
                seq, prev = self._settle_torn(fd, tail)
                return self._write_entry(fd, seq + 1, prev, actor, action, target, details)
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot write the audit log", exc) from exc

    def reseal(self, actor: str, reason: str) -> Optional[dict[str, Any]]:
        """Record a loss at the end of the log (what the head named, what is left) in an
        `audit.resealed` entry and go on from there; None if the tail matches its head."""
        try:
            with self._locked() as fd:
                tail = self._inspect_tail(fd)
                if tail.problem is None:
                    return None
                details: dict[str, Any] = {
                    "reason": reason, "problem": tail.problem, "log_seq": tail.seq, "log_hash": tail.digest,
                    "head_seq": tail.head[0] if tail.head else None, "head_hash": tail.head[1] if tail.head else None}
                if tail.torn_is_entry:
                    self._restore_newline(fd)
                elif tail.torn:  # the damaged remains of the lost entry: their fingerprint goes in the entry
                    self._cut(fd, tail.cut)
                    details |= {"discarded_bytes": len(tail.torn), "sha256": hashlib.sha256(tail.torn).hexdigest()}
                return self._write_entry(fd, tail.seq + 1, tail.digest, actor, Action.RESEAL, self.path.name, details)
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot write the audit log", exc) from exc

    def tail_problem(self) -> Optional[str]:
        """Why appends would be refused right now (None: they would not). Changes nothing."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None if not self.head_path.exists() else f"{AUDIT_LOG_FILE} is missing but {AUDIT_HEAD_FILE} exists"
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # not halfway through someone's append
            return self._inspect_tail(fd).problem
        except RecordingIntegrityError as exc:
            return str(exc)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        make_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one appender at a time, across processes
            yield fd
        finally:
            os.close(fd)

    def _inspect_tail(self, fd: int) -> _Tail:
        """The last entry, any unterminated line after it, and whether that matches audit.head."""
        tail = self._last_complete_entry(fd)
        if tail.torn:
            self._classify_torn(tail)
        if tail.problem is None:
            tail.head, tail.problem = self._read_head()
        if tail.problem is None:
            tail.problem = self._head_mismatch(tail)
        return tail

    def _last_complete_entry(self, fd: int) -> _Tail:
        size = os.fstat(fd).st_size
        start = max(0, size - _TAIL_READ)
        window = os.pread(fd, size - start, start)
        cut = window.rfind(b"\n") + 1  # 0 if there is no complete line in the window
        if cut == 0 and start > 0:
            raise RecordingIntegrityError(f"{self.path}: last line longer than any entry; run `audit verify`")
        tail = _Tail(cut=start + cut, torn=window[cut:])
        complete = window[:cut].rstrip(b"\n")
        if not complete:
            return tail
        lines = complete.split(b"\n")
        if len(lines) == 1 and start > 0:
            raise RecordingIntegrityError(f"{self.path}: last line longer than any entry; run `audit verify`")
        try:
            last = json.loads(lines[-1])
            tail.seq, tail.digest = int(last["seq"]), str(last["hash"])
            tail.last_prev = str(last["prev"])
        except (ValueError, KeyError, TypeError):
            raise RecordingIntegrityError(f"{self.path}: last entry is corrupt; run `audit verify`") from None
        return tail

    def _classify_torn(self, tail: _Tail) -> None:
        """An unterminated last line: the next entry minus its newline, or the remains of an append."""
        try:
            entry = json.loads(tail.torn)
        except ValueError:
            return  # not even JSON: an interrupted append, if the head agrees (_head_mismatch)
        if not self._authentic(entry):
            return
        if entry["seq"] != tail.seq + 1 or entry["prev"] != tail.digest:
            tail.problem = (f"the unterminated last line is an authentic entry (seq {entry['seq']}) that does not "
                            f"follow seq {tail.seq}: entries were moved")
            return
        tail.seq, tail.digest, tail.last_prev, tail.torn_is_entry = entry["seq"], entry["hash"], entry["prev"], True

    def _read_head(self) -> tuple[Optional[tuple[int, str]], Optional[str]]:
        """(seq, hash) recorded in audit.head (None if there is none), or why it cannot be believed."""
        try:
            head = json.loads(self.head_path.read_bytes())
            seq, digest, mac = int(head["seq"]), str(head["hash"]), str(head["mac"])
        except FileNotFoundError:
            return None, None
        except (ValueError, KeyError, TypeError):
            return None, f"{AUDIT_HEAD_FILE} is corrupt"
        if not hmac.compare_digest(mac, self._head_mac(seq, digest)):
            return None, f"{AUDIT_HEAD_FILE} fails authentication (edited)"
        return (seq, digest), None

    def _head_mismatch(self, tail: _Tail) -> Optional[str]:
        damaged = tail.torn and not tail.torn_is_entry
        if tail.head is None:
            if tail.seq == 0:
                return None  # a new log (or the first append was interrupted before any head was written)
            return (f"{AUDIT_HEAD_FILE} is missing while the log has {tail.seq} entries: "
                    "removal of entries from the end cannot be ruled out")
        seq, digest = tail.head
        if seq > tail.seq:
            return (f"the log ends at seq {tail.seq} but {AUDIT_HEAD_FILE} records seq {seq}: entries removed from "
                    "the end" + (f", and a damaged last line ({len(tail.torn)} bytes) left behind" if damaged else ""))
        if seq == tail.seq and digest != tail.digest:
            return f"entry {seq} does not match {AUDIT_HEAD_FILE}: the log was rewritten"
        if seq == tail.seq - 1 and digest != tail.last_prev:
            return f"entry {seq} does not match {AUDIT_HEAD_FILE}: the log was rewritten"
        return None  # a head further behind: only a crash between append and head update; verify notes it

    def _settle_torn(self, fd: int, tail: _Tail) -> tuple[int, str]:
        """Restore an entry that only lost its newline; cut off (and log) what a crashed append left."""
        if tail.torn_is_entry:
            self._restore_newline(fd)
        elif tail.torn:
            self._cut(fd, tail.cut)
            entry = self._write_entry(fd, tail.seq + 1, tail.digest, "consult-sfu", Action.TORN_TAIL, self.path.name,
                                      {"discarded_bytes": len(tail.torn),
                                       "sha256": hashlib.sha256(tail.torn).hexdigest(),
                                       "head_seq": tail.head[0] if tail.head else 0})
            return entry["seq"], entry["hash"]
        return tail.seq, tail.digest

    @staticmethod
    def _restore_newline(fd: int) -> None:
        write_all(fd, b"\n")  # O_APPEND: right after the unterminated entry
        os.fsync(fd)

    @staticmethod
    def _cut(fd: int, length: int) -> None:
        os.ftruncate(fd, length)
        os.fsync(fd)

    def _write_entry(self, fd: int, seq: int, prev: str, actor: str, action: str, target: str,
                     details: Mapping[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {"seq": seq, "time": utc_now_iso(), "actor": capped(actor), "action": capped(action),
                                 "target": capped(target), "details": _capped_details(details), "prev": prev}
        entry["hash"] = self._mac(_canonical(entry))
        write_all(fd, _canonical(entry) + b"\n")
        os.fsync(fd)
        head = {"seq": seq, "hash": entry["hash"], "mac": self._head_mac(seq, entry["hash"])}
        atomic_write(self.head_path, _canonical(head) + b"\n")  # fsyncs the file and the directory
        return entry

    # -- reading -----------------------------------------------------------------------------------

    def authentic_entries(self) -> Iterator[dict[str, Any]]:
        """Entries whose own HMAC verifies (each on its own; verify() checks the chain)."""
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if self._authentic(entry):
                        yield entry
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
            else:
                self._note_entry(report, entry)
            # Resynchronise on this entry, so one edit is reported once, not as a cascade.
            hashes[seq] = digest
            expected_seq, prev = seq + 1, digest
            report.entries += 1
        if torn and self._verify_torn(report, torn, expected_seq, prev, hashes):
            expected_seq += 1
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

    @staticmethod
    def _note_entry(report: AuditReport, entry: dict[str, Any]) -> None:
        """What an authentic entry tells the auditor beyond itself: starts, cut tails, recorded losses."""
        details = entry["details"] if isinstance(entry["details"], dict) else {}
        if entry["action"] == Action.RECORD_START:
            report.starts.add(entry["target"])
        elif entry["action"] == Action.TORN_TAIL:
            report.torn_tails.append(entry["seq"])
            report.notes.append(
                f"seq {entry['seq']}: audit.torn_tail: {details.get('discarded_bytes')} bytes of an interrupted "
                f"append (sha256 {str(details.get('sha256'))[:16]}…) were cut off after seq {entry['seq'] - 1}"
                + ("" if "head_seq" in details else
                   " (written before cuts were checked against the head: it may hide a removed entry)"))
        elif entry["action"] == Action.RESEAL:
            report.reseals.append(entry["seq"])
            report.notes.append(
                f"seq {entry['seq']}: RESEALED by {entry['actor']}: {details.get('problem')}; "
                f"reason given: {details.get('reason')}")

    def _verify_torn(self, report: AuditReport, torn: bytes, expected_seq: int, prev: str,
                     hashes: dict[int, str]) -> bool:
        """An unterminated last line: an entry that lost its newline counts (True); anything else is
        noted (the head check says whether a committed entry was lost with it)."""
        try:
            entry = json.loads(torn)
        except ValueError:
            entry = None
        if entry is not None and self._check_entry(entry, expected_seq, prev) is None:
            self._note_entry(report, entry)
            hashes[expected_seq] = entry["hash"]
            report.entries += 1
            report.notes.append(f"seq {expected_seq}: its line lacks the final newline; the next append restores it")
            return True
        report.notes.append(f"last line is incomplete ({len(torn)} bytes): the next append cuts it off and logs "
                            "audit.torn_tail if the head shows it was never committed, and is refused otherwise")
        return False

    def _check_entry(self, entry: Any, expected_seq: int, prev: str) -> Optional[str]:
        if not isinstance(entry, dict) or set(entry) != _FIELDS:
            return "not an audit entry (fields changed)"
        if not self._authentic(entry):
            return "hash mismatch: entry edited (or written without the audit key)"
        if entry["seq"] != expected_seq:
            return f"seq {entry['seq']} where {expected_seq} was expected: entries deleted, inserted or reordered"
        if entry["prev"] != prev:
            return "does not chain to the entry before it: entries deleted, inserted or reordered"
        return None

    def _check_head(self, report: AuditReport, hashes: dict[int, str]) -> None:
        head, problem = self._read_head()
        if problem:
            report.problems.append(problem)
            return
        if head is None:
            if hashes:
                report.problems.append(
                    f"{AUDIT_HEAD_FILE} is missing: removal of entries from the end cannot be ruled out")
            return
        seq, digest = head
        report.head_seq = seq
        if seq > report.last_seq:
            report.problems.append(f"the log ends at seq {report.last_seq} but the head records seq {seq}: "
                                   "entries removed from the end")
        elif hashes.get(seq) != digest:
            report.problems.append(f"entry {seq} does not match the head: the log was rewritten")
        elif seq < report.last_seq:
            n = report.last_seq - seq
            report.notes.append(f"{n} authenticated entr{'y' if n == 1 else 'ies'} after the recorded head "
                                "(a crash between append and head update)")
