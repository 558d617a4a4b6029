"""Operations on all recordings of a data directory: list, verify, open for replay, purge, rotate.

Every operation that reveals or destroys something is audited; opening a recording
for replay or export refuses to proceed if the audit entry cannot be written.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .audit import Action, AuditLog, AuditReport
from .errors import KeyUnavailableError, RecorderError, RecordingIntegrityError, RecordingNotFoundError
from .keys import DATA_KEY_FILE, KeyStore, RotationResult, destroy_data_key
from .manifest import MANIFEST_FILE, Manifest, is_recording_id, parse_iso
from .reader import RecordingReader, VerifyReport, writer_alive
from .replay_cache import remove_recording_cache
from .segments import SegmentScanner

log = logging.getLogger(__name__)


@dataclass
class RecordingInfo:
    id: str
    created: str
    room: str
    tracks: int
    size_bytes: int
    state: str  # recording | closed | open (writer gone, no final segments) | shredded | unreadable
    continues: Optional[str] = None  # the recording this one carries on (a call moved to another node)
    part: int = 1


@dataclass
class PurgeResult:
    purged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


class RecordingStore:
    def __init__(self, data_dir: Path, *, keys: Optional[KeyStore] = None, audit: Optional[AuditLog] = None,
                 actor: str = "consult-sfu") -> None:
        self.data_dir = data_dir
        self.recordings_dir = data_dir / "recordings"
        self.keys = keys
        self.audit = audit
        self.actor = actor

    def _dirs(self) -> list[Path]:
        try:
            return sorted(p for p in self.recordings_dir.iterdir() if p.is_dir() and is_recording_id(p.name))
        except FileNotFoundError:
            return []

    def _require_keys(self) -> KeyStore:
        if self.keys is None:
            raise KeyUnavailableError("no recording key-encryption key configured")
        return self.keys

    # -- listing (no key needed; nothing authenticated) -------------------------------------------

    def list(self) -> list[RecordingInfo]:
        return [self._info(d) for d in self._dirs()]

    def _info(self, path: Path) -> RecordingInfo:
        try:
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        except FileNotFoundError:  # being purged right now
            size = 0
        try:
            manifest, _ = Manifest.load(path)
        except RecorderError:
            return RecordingInfo(path.name, "?", "?", 0, size, "unreadable")
        if not (path / DATA_KEY_FILE).exists():
            state = "shredded"
        elif writer_alive(path):
            state = "recording"
        else:
            state = "closed" if all(self._final_flag(path, t.file) for t in manifest.tracks) else "open"
        return RecordingInfo(manifest.id, manifest.created, manifest.room, len(manifest.tracks) - 1, size, state,
                             manifest.continues, manifest.part)

    @staticmethod
    def _final_flag(path: Path, file: str) -> bool:
        # The clear-text final flag of the last segment: a hint for listing; `verify` authenticates.
        try:
            with open(path / file, "rb") as f:
                scanner = SegmentScanner(f, os.fstat(f.fileno()).st_size, file)
                for _ in scanner:
                    pass
                return scanner.final_seen
        except (OSError, RecorderError):
            return False

    # -- reading -----------------------------------------------------------------------------------

    def open_reader(self, recording_id: str, *, actor: str, purpose: str) -> RecordingReader:
        """Open a recording for `purpose` (Action.REPLAY / Action.EXPORT / Action.VERIFY).

        The access is audited first and refused if that fails; a failed open (wrong or
        missing key, altered manifest or key) is audited as access.failed."""
        if self.audit is None:
            raise KeyUnavailableError("opening a recording needs the audit log")
        try:
            reader = RecordingReader.open(self.data_dir, recording_id, self._require_keys())
        except (KeyUnavailableError, RecordingIntegrityError, RecordingNotFoundError) as exc:
            try:
                self.audit.append(actor, Action.ACCESS_FAILED, recording_id, {"purpose": purpose, "error": str(exc)})
            except RecorderError as audit_exc:
                log.error("could not audit a failed access to %s: %s", recording_id, audit_exc)
            raise
        if purpose != Action.VERIFY:  # verify is audited with its result, below
            self.audit.append(actor, purpose, recording_id, {})
        return reader

    def verify(self, recording_id: str, *, actor: str) -> VerifyReport:
        """Authenticate every segment; cross-check the segment counts of an audited record.stop."""
        if self.audit is not None:
            reader = self.open_reader(recording_id, actor=actor, purpose=Action.VERIFY)
        else:
            reader = RecordingReader.open(self.data_dir, recording_id, self._require_keys())
        report = reader.verify()
        if self.audit is not None:
            self._cross_check_stop(self.audit, report)
            try:
                self.audit.append(actor, Action.VERIFY, recording_id,
                                  {"status": report.status, "problems": report.problems[:10]})
            except RecorderError as exc:
                log.warning("could not audit the verification of %s: %s", recording_id, exc)
        return report

    @staticmethod
    def _cross_check_stop(audit: AuditLog, report: VerifyReport) -> None:
        # A recording cut back to a segment boundary (or with its stop summary removed)
        # looks like a crash on disk; the audit log knows it was stopped cleanly.
        stop = next((e for e in audit.authentic_entries()
                     if e["action"] == Action.RECORD_STOP and e["target"] == report.recording_id), None)
        if stop is None:
            return
        audited = {str(k): int(v) for k, v in stop["details"].get("segments", {}).items()}
        found = {t.track_id: t.segments for t in report.tracks}
        already = {t.track_id for t in report.tracks if t.problems}  # a count mismatch would only repeat those
        for track_id, count in sorted(audited.items()):
            if track_id not in already and found.get(track_id, 0) != count:
                report.problems.append(
                    f"track {track_id!r}: {found.get(track_id, 0)} authenticated segments, but the audit log "
                    f"recorded {count} when the recording stopped: truncated or removed")

    # -- retention ---------------------------------------------------------------------------------

    def purge(self, older_than_days: float, *, actor: str, dry_run: bool = False,
              now: Optional[dt.datetime] = None) -> PurgeResult:
        """Delete recordings created more than `older_than_days` ago: data key first, then the files."""
        now = now or dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(days=older_than_days)
        result = PurgeResult()
        for path in self._dirs():
            rid = path.name
            try:
                created = parse_iso(Manifest.load(path)[0].created)
            except RecorderError as exc:
                if (path / MANIFEST_FILE).exists() or (path / DATA_KEY_FILE).exists():
                    result.skipped[rid] = f"manifest unreadable, not touching it: {exc}"
                    continue
                created = None  # the remnant of an interrupted purge: key and manifest already gone
            if created is not None and created > cutoff:
                continue
            if writer_alive(path):
                result.skipped[rid] = "still recording"
                continue
            if dry_run:
                result.purged.append(rid)
                continue
            shredded = destroy_data_key(path)  # from here on the media is undecryptable
            # Watermarked replays rendered from it (encrypted, but still its pictures) go too;
            # a running server notices the data key is gone and stops serving and rendering them.
            cached = remove_recording_cache(self.data_dir, rid)
            if self.audit is not None:
                self.audit.append(actor, Action.PURGE, rid, {
                    "created": created.isoformat() if created else None, "older_than_days": older_than_days,
                    "data_key_destroyed": shredded, "replay_cache_removed": cached})
            shutil.rmtree(path)
            result.purged.append(rid)
        return result

    # -- keys --------------------------------------------------------------------------------------

    def rotate_key(self, *, actor: str) -> RotationResult:
        result = self._require_keys().rotate()
        if self.audit is not None:
            self.audit.append(actor, Action.KEY_ROTATE, "kek", {
                "old_kek_id": result.old_kek_id, "new_kek_id": result.new_kek_id,
                "rewrapped": len(result.rewrapped), "already_done": len(result.already_done),
                "problems": result.problems, "completed": result.completed})
        return result

    # -- audit -------------------------------------------------------------------------------------

    def audit_verify(self, expect: Optional[tuple[int, str]] = None) -> AuditReport:
        """Verify the chain and that every recording on disk has its record.start entry."""
        if self.audit is None:
            raise KeyUnavailableError("no audit key")
        report = self.audit.verify(expect)
        for path in self._dirs():
            if path.name not in report.starts and (path / MANIFEST_FILE).exists():
                report.problems.append(f"recording {path.name} has no record.start entry: "
                                       "entries removed, or the log replaced")
        return report
