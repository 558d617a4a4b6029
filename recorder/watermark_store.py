"""Where this deployment keeps the watermark registry (watermark/registry.py): its issues in
the audit log, its pattern key under the data directory; and the two commands that open
it there, `python -m recorder export` (export_hook) and `python -m recorder trace`.

The pattern key. Embedding and tracing share a secret: `<data dir>/watermark.key`
(32 bytes base64, 0600, created at the first issue) or CONSULT_WATERMARK_KEY (or the
file named by CONSULT_WATERMARK_KEY_FILE). Without it nobody can read, forge or
cleanly remove the mark; losing it makes every issued watermark untraceable, so back
it up with the audit key. Its public fingerprint (`key_id`) is recorded at every issue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from watermark.registry import TRACE_ACTION, WatermarkRegistry, format_id
from watermark.trace import DEFAULT_MAX_SECONDS, EXIT_ERROR, ClipError, format_report, trace_clip

from .audit import AuditLog
from .errors import KeyUnavailableError, RecorderError, RecordingStorageError
from .fsutil import atomic_write, make_private_dir
from .keys import decode_kek, encode_kek

WATERMARK_KEY_FILE = "watermark.key"
WATERMARK_KEY_ENV = "CONSULT_WATERMARK_KEY"
WATERMARK_KEY_FILE_ENV = "CONSULT_WATERMARK_KEY_FILE"


def load_key(data_dir: Path, *, key_file: Optional[Path] = None, environ: Mapping[str, str] = os.environ,
             create: bool = False) -> bytes:
    """The watermark pattern key: CONSULT_WATERMARK_KEY, else the key file (CONSULT_WATERMARK_KEY_FILE,
    `key_file`, or `<data dir>/watermark.key`), generated (0600) only when `create` and absent."""
    if environ.get(WATERMARK_KEY_ENV):
        return decode_kek(environ[WATERMARK_KEY_ENV], WATERMARK_KEY_ENV)
    path = key_file or (Path(environ[WATERMARK_KEY_FILE_ENV]) if environ.get(WATERMARK_KEY_FILE_ENV) else
                        data_dir / WATERMARK_KEY_FILE)
    try:
        return decode_kek(path.read_text(), str(path))
    except FileNotFoundError:
        if not create:
            raise KeyUnavailableError(f"no watermark key at {path} (it is created by the first watermarked "
                                      f"export or replay; set {WATERMARK_KEY_ENV} or restore the file)") from None
    try:
        make_private_dir(path.parent)
        atomic_write(path, (encode_kek(os.urandom(32)) + "\n").encode(), exclusive=True)
    except FileExistsError:
        pass  # another process made it first: use theirs
    except OSError as exc:
        raise RecordingStorageError.from_os_error("cannot create the watermark key", exc) from exc
    return decode_kek(path.read_text(), str(path))


def open_registry(data_dir: Path, *, audit_key_file: Optional[Path] = None, watermark_key_file: Optional[Path] = None,
                  environ: Mapping[str, str] = os.environ, create: bool = False) -> WatermarkRegistry:
    """The data directory's registry: its audit log and watermark key."""
    audit = AuditLog.open(data_dir, key_file=audit_key_file, environ=environ, create=create)
    return WatermarkRegistry(audit, load_key(data_dir, key_file=watermark_key_file, environ=environ, create=create))


def export_hook(data_dir: Path, *, recording_id: str, viewer: str, actor: str, viewer_name: Optional[str] = None,
                purpose: str = "export", audit_key_file: Optional[Path] = None,
                environ: Mapping[str, str] = os.environ):
    """Issue a watermark for an export (or replay) and return (issued, frame_hook) — the one
    call `python -m recorder export` needs before export_recording(..., frame_hook=hook)."""
    registry = open_registry(data_dir, audit_key_file=audit_key_file, environ=environ, create=True)
    issued = registry.issue(viewer=viewer, purpose=purpose, recording_id=recording_id, actor=actor,
                            viewer_name=viewer_name)
    return issued, registry.watermarker(issued).frame_hook


def add_trace_arguments(p: argparse.ArgumentParser) -> None:
    """The `trace` subcommand's own arguments (recorder/cli.py adds --data-dir etc.)."""
    p.add_argument("clip", type=Path, help="the video file to examine")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help=f"examine at most this much of the clip (default {DEFAULT_MAX_SECONDS:g} s)")
    p.add_argument("--watermark-key-file", type=Path, default=None,
                   help="watermark key (env CONSULT_WATERMARK_KEY / CONSULT_WATERMARK_KEY_FILE; "
                        "default DATA_DIR/watermark.key)")
    p.add_argument("--json", action="store_true")


def run_trace(args: argparse.Namespace, data_dir: Path, audit_key_file: Optional[Path], actor: str) -> int:
    """The body of `python -m recorder trace` (recorder/cli.py dispatches here): exit codes in
    watermark/trace.py; every trace is audited (action "watermark.trace", target = the clip's SHA-256)."""
    try:
        registry = open_registry(data_dir, audit_key_file=audit_key_file, watermark_key_file=args.watermark_key_file)
        if not args.clip.is_file():
            raise RecorderError(f"{args.clip}: no such file")
        result = trace_clip(args.clip, registry, max_seconds=args.max_seconds)
    except (RecorderError, ClipError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        registry.audit.append(actor, TRACE_ACTION, result.sha256, {
            "clip": args.clip.name[:200], "verdict": result.verdict,
            "watermark_id": format_id(result.wm_id) if result.wm_id is not None else None,
            "sync_z": round(result.sync_z, 2), "method": result.method or None})
    except RecorderError as exc:
        print(f"warning: could not audit this trace: {exc}", file=sys.stderr)
    print(json.dumps(result.as_dict(), indent=1) if args.json else format_report(result))
    return result.exit_code
