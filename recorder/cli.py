"""`python -m recorder`: inspect and maintain the encrypted recordings of a data directory.

Exit codes: 0 ok; 1 verification failed (tampering: a segment, the manifest, a wrapped
key or the audit log; or a rotation that could not finish); 2 usage or operational
error (no such recording, no or wrong KEK, disk); 3 authentic but incomplete (the
writer died, or is still recording).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Optional, overload

from . import watermark_store
from .audit import AuditLog
from .errors import KeyUnavailableError, RecorderError, RecordingIntegrityError
from .keys import KeyStore
from .store import RecordingStore

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 2, 3
RETENTION_ENV = "CONSULT_RECORDING_RETENTION_DAYS"
# Exports are decrypted patient video, keys and logs are secrets: nothing this process
# creates may be readable by group or others, whatever the invoking shell's umask.
PRIVATE_UMASK = 0o077


@overload
def _env(name: str) -> Optional[str]: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    return os.environ.get(f"CONSULT_{name}", default)


def _env_path(name: str) -> Optional[Path]:
    """The path an environment variable names; None when it is unset or empty."""
    value = _env(name)
    return Path(value) if value else None


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid{os.getuid()}"


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before or after the command (`--data-dir X list`, `list --data-dir X`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS,
                        help="data directory as run.py uses it; recordings live in DATA_DIR/recordings "
                             "(env CONSULT_DATA_DIR, default: data)")
    common.add_argument("--kek-file", type=Path, default=argparse.SUPPRESS,
                        help="key-encryption key file (env CONSULT_RECORDING_KEK_FILE; "
                             "default DATA_DIR/recording.kek; CONSULT_RECORDING_KEK, a base64 key, takes precedence)")
    common.add_argument("--audit-key-file", type=Path, default=argparse.SUPPRESS,
                        help="audit HMAC key file (env CONSULT_AUDIT_KEY_FILE; default DATA_DIR/audit.key)")
    common.add_argument("--actor", default=argparse.SUPPRESS, help="who to name in the audit log (default cli:<user>)")

    p = argparse.ArgumentParser(prog="python -m recorder", parents=[common],
                                description="Encrypted consultation recordings: list, verify, export, trace a leak, "
                                            "rotate the key, purge, audit.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ls = sub.add_parser("list", parents=[common], help="list recordings (unauthenticated summary)")
    ls.add_argument("--json", action="store_true")
    v = sub.add_parser("verify", parents=[common], help="authenticate every segment of a recording")
    v.add_argument("id")
    v.add_argument("--json", action="store_true")
    ex = sub.add_parser("export", parents=[common],
                        help="write a WebM of the patient's video with the drawings burned in and the audio mixed")
    ex.add_argument("id")
    ex.add_argument("--out", type=Path, required=True, help="output file (.webm)")
    ex.add_argument("--track", help="the video track to export (default: the patient's)")
    ex.add_argument("--viewer", help="who receives the export; their identity is watermarked in (default: the actor)")
    ex.add_argument("--viewer-name", help="display name shown in the visible watermark")
    tr = sub.add_parser("trace", parents=[common],
                        help="name the viewer/export a leaked clip came from (exit 0 identified, 1 no watermark, "
                             "3 watermark unreadable or never issued here, 2 error)")
    watermark_store.add_trace_arguments(tr)
    sub.add_parser("rotate-key", parents=[common],
                   help="re-wrap every data key under a new KEK and retire the old one (media is not re-encrypted)")
    pg = sub.add_parser("purge", parents=[common], help="crypto-shred and delete recordings past retention")
    retention_days = _env("RECORDING_RETENTION_DAYS")
    pg.add_argument("--older-than", type=float, metavar="DAYS",
                    default=float(retention_days) if retention_days else None,
                    help=f"age in days (env {RETENTION_ENV}); required: there is no built-in retention period")
    pg.add_argument("--dry-run", action="store_true", help="only print what would be purged")
    au = sub.add_parser("audit", parents=[common], help="audit log")
    au_sub = au.add_subparsers(dest="audit_command", required=True, metavar="SUBCOMMAND")
    av = au_sub.add_parser("verify", parents=[common], help="verify the hash chain and its head")
    av.add_argument("--expect", metavar="SEQ:HASH", help="an externally recorded head that must still be in the log")
    av.add_argument("--json", action="store_true")
    rs = au_sub.add_parser("reseal", parents=[common],
                           help="after entries were lost from the end (appends are refused): record the loss in the "
                                "log and let appends go on from what is left")
    rs.add_argument("--reason", required=True, help="why (e.g. the backup it could not be restored from)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    os.umask(PRIVATE_UMASK)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    data_dir: Path = getattr(args, "data_dir", None) or Path(_env("DATA_DIR", "data"))
    kek_file = getattr(args, "kek_file", None) or _env_path("RECORDING_KEK_FILE")
    audit_key_file = getattr(args, "audit_key_file", None) or _env_path("AUDIT_KEY_FILE")
    actor = getattr(args, "actor", None) or _default_actor()
    try:
        return _run(args, parser, data_dir, kek_file, audit_key_file, actor)
    except RecordingIntegrityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RecorderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _audit(data_dir: Path, key_file: Optional[Path], *, create: bool) -> AuditLog:
    return AuditLog.open(data_dir, key_file=key_file, create=create)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, data_dir: Path, kek_file: Optional[Path],
         audit_key_file: Optional[Path], actor: str) -> int:
    if args.command == "list":
        infos = RecordingStore(data_dir).list()
        if args.json:
            print(json.dumps([asdict(i) for i in infos], indent=1))
        elif not infos:
            print(f"no recordings in {data_dir / 'recordings'}")
        else:
            print(f"{'id':31} {'created (UTC)':19} {'room':16} {'tracks':>6} {'size':>10}  state (unverified)")
            for i in infos:
                part = f" (part {i.part}, continues {i.continues})" if i.continues else ""
                print(f"{i.id:31} {i.created[:19]:19} {i.room[:16]:16} {i.tracks:>6} {i.size_bytes:>10}  "
                      f"{i.state}{part}")
        return EXIT_OK

    if args.command == "verify":
        keys = KeyStore.open(data_dir, kek_file=kek_file)
        try:
            audit: Optional[AuditLog] = _audit(data_dir, audit_key_file, create=True)
        except RecorderError as exc:
            print(f"warning: verifying without the audit log: {exc}", file=sys.stderr)
            audit = None
        report = RecordingStore(data_dir, keys=keys, audit=audit).verify(args.id, actor=actor)
        if args.json:
            print(json.dumps(asdict(report) | {"status": report.status}, indent=1))
        else:
            print(f"recording {report.recording_id}  room {report.room}  created {report.created}")
            for t in report.tracks:
                torn = f", torn tail {t.torn_bytes} B" if t.torn_bytes else ""
                end = "final" if t.final else "no final segment" + torn
                print(f"  {t.track_id:24} {t.kind + '/' + t.codec:14} {t.segments:6} segments {t.frames:8} frames "
                      f"{t.payload_bytes:>11} B  {end}")
            for problem in report.problems:
                print(f"  TAMPERED: {problem}")
            total = sum(t.segments for t in report.tracks)
            print(f"status: {report.status} ({total} segments authenticated)")
        return {"complete": EXIT_OK, "tampered": EXIT_FAILED}.get(report.status, EXIT_INCOMPLETE)

    if args.command == "export":
        from .audit import Action
        from .export import export_recording  # PyAV and OpenCV only for exports

        keys = KeyStore.open(data_dir, kek_file=kek_file)
        store = RecordingStore(data_dir, keys=keys, audit=_audit(data_dir, audit_key_file, create=True))
        reader = store.open_reader(args.id, actor=actor, purpose=Action.EXPORT)
        # every export carries its viewer, visibly and invisibly, so a leak can be traced
        issued, hook = watermark_store.export_hook(data_dir, recording_id=args.id, viewer=args.viewer or actor,
                                                   viewer_name=args.viewer_name, actor=actor,
                                                   audit_key_file=audit_key_file)
        result = export_recording(reader, args.out, video_track=args.track, frame_hook=hook)
        print(f"exported {result.video_track}: {result.frames} frames, {result.duration_ms / 1000:.1f} s, "
              f"{result.width}x{result.height}, {result.annotations} annotation events, "
              f"watermark {issued.hex_id} -> {result.path}")
        return EXIT_OK

    if args.command == "trace":
        return watermark_store.run_trace(args, data_dir, audit_key_file, actor)

    if args.command == "rotate-key":
        keys = KeyStore.open(data_dir, kek_file=kek_file)
        store = RecordingStore(data_dir, keys=keys, audit=_audit(data_dir, audit_key_file, create=True))
        rotation = store.rotate_key(actor=actor)
        print(f"re-wrapped {len(rotation.rewrapped)} data keys under KEK {rotation.new_kek_id}"
              + (f" ({len(rotation.already_done)} already done by an interrupted run)"
                 if rotation.already_done else ""))
        for rid, why in rotation.problems.items():
            print(f"  NOT re-wrapped: {rid}: {why}", file=sys.stderr)
        if not rotation.completed:
            print(f"rotation not completed: the old KEK {rotation.old_kek_id} is kept; fix the above and run again",
                  file=sys.stderr)
            return EXIT_FAILED
        if keys.kek_file is None:
            print("the KEK comes from CONSULT_RECORDING_KEK: set it to the value of CONSULT_RECORDING_NEW_KEK "
                  "now, then restart the server")
        else:
            print(f"old KEK {rotation.old_kek_id} retired; {keys.kek_file} holds the new one")
        return EXIT_OK

    if args.command == "purge":
        if args.older_than is None:
            parser.error(f"purge needs --older-than DAYS (or {RETENTION_ENV})")
        if args.older_than < 0:
            parser.error("--older-than must not be negative")
        store = RecordingStore(data_dir, audit=None if args.dry_run else _audit(data_dir, audit_key_file, create=True))
        purge = store.purge(args.older_than, actor=actor, dry_run=args.dry_run)
        verb = "would purge" if args.dry_run else "purged"
        for rid in purge.purged:
            print(f"{verb} {rid}")
        for rid, why in purge.skipped.items():
            print(f"skipped {rid}: {why}", file=sys.stderr)
        print(f"{verb} {len(purge.purged)} recording(s) older than {args.older_than:g} days")
        return EXIT_OK

    if args.command == "audit" and args.audit_command == "reseal":
        return _audit_reseal(_audit(data_dir, audit_key_file, create=False), actor, args.reason)

    if args.command == "audit":  # verify
        expect = None
        if args.expect:
            seq, _, digest = args.expect.partition(":")
            if not seq.isdigit() or len(digest) != 64:
                parser.error("--expect takes SEQ:HASH as printed by `audit verify`")
            expect = (int(seq), digest)
        try:
            audit = _audit(data_dir, audit_key_file, create=False)
        except KeyUnavailableError:
            if not (data_dir / "audit.log").exists():
                recordings = RecordingStore(data_dir).list()
                print(f"no audit log in {data_dir}"
                      + (f", yet {len(recordings)} recording(s) exist" if recordings else ""))
                return EXIT_FAILED if recordings else EXIT_OK
            raise
        audit_report = RecordingStore(data_dir, audit=audit).audit_verify(expect)
        if args.json:
            print(json.dumps(asdict(audit_report) | {"starts": sorted(audit_report.starts), "ok": audit_report.ok},
                             indent=1))
        else:
            for problem in audit_report.problems:
                print(f"TAMPERED: {problem}")
            for note in audit_report.notes:
                print(f"note: {note}")
            print(f"{'ok' if audit_report.ok else 'FAILED'}: {audit_report.entries} entries; "
                  f"head {audit_report.last_seq}:{audit_report.last_hash}")
        return EXIT_OK if audit_report.ok else EXIT_FAILED

    parser.error(f"unknown command {args.command}")
    return EXIT_ERROR


def _audit_reseal(audit: AuditLog, actor: str, reason: str) -> int:
    entry = audit.reseal(actor, reason)
    if entry is None:
        print("the log's end matches its head: nothing to reseal")
        return EXIT_OK
    print(f"resealed at seq {entry['seq']}: {entry['details']['problem']}")
    print(f"head {entry['seq']}:{entry['hash']} (`audit verify` lists this reseal from now on)")
    return EXIT_OK
