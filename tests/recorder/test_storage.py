"""A full disk and an unwritable directory stop a recording with RecordingStorageError; the process goes on.

Real file systems, no mocks: a 2 MB tmpfs and a read-only bind mount, each inside a mount
namespace the test creates (`unshare -m`, needs root), and a directory the writer's user
may not write to (the child drops to `nobody` with setpriv).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from recorder.audit import AuditLog
from recorder.keys import KeyStore
from recorder.writer import RecordingWriter

from . import synthetic
from .conftest import ROOT


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mount_ns = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare -m (mount namespaces)")


def in_mount_namespace(setup: str, *args: str) -> dict:
    """Run `setup` (sh, with $1..) then the child in a private mount namespace; return the child's JSON."""
    script = f"set -e; {setup}; cd {ROOT}; exec \"$PY\" -m tests.recorder.child \"$MODE\" \"$1\""
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *args],
                            env=os.environ | {"PY": sys.executable, "MODE": args[-1]}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def closed_recording(data_dir: Path) -> str:
    keys = KeyStore.open(data_dir, environ={}, create=True)
    audit = AuditLog.open(data_dir, environ={}, create=True)
    writer = RecordingWriter.start(data_dir, keys, room="r1", tracks=synthetic.tracks(), audit=audit, actor="doctor-1")
    synthetic.write(writer, synthetic.session(2000))
    writer.close()
    return writer.id


@needs_mount_ns
def test_disk_full_stops_the_recording_not_the_process(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    out = in_mount_namespace('mount -t tmpfs -o size=2m,mode=0700 tmpfs "$1"', str(data_dir), "disk-full")
    assert out["errno"] == errno.ENOSPC
    assert out["error"].startswith(f"recording {out['id']} stopped: cannot write track")
    assert "No space left on device" in out["error"]
    assert out["failed"] == out["error"]
    assert out["later_write"].startswith("RecordingStorageError: ")  # every later call says so again
    # What was written before the disk filled up is intact and readable, marked incomplete.
    assert out["verify"]["status"] == "incomplete" and out["verify"]["problems"] == []
    assert out["verify"]["frames"]["patient-video"] > 30
    assert out["after_freeing_space"] == "complete"


@needs_mount_ns
def test_read_only_file_system(tmp_path):
    data_dir = tmp_path / "data"
    rid = closed_recording(data_dir)
    out = in_mount_namespace('mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"', str(data_dir), "unwritable")
    assert out["start"]["errno"] == errno.EROFS
    assert "cannot start a recording" in out["start"]["error"] and "Read-only file system" in out["start"]["error"]
    assert out["left_behind"] == [".keys.lock", rid]
    assert out["existing"][rid][0] == "complete" and out["existing"][rid][1] > 100


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become nobody")
def test_directory_without_write_permission(tmp_path):
    # Root ignores permission bits, so the child runs as nobody against a directory it owns read-only.
    base = Path(tempfile.mkdtemp(prefix="recorder-perm-"))
    try:
        base.chmod(0o755)
        data_dir = base / "data"
        rid = closed_recording(data_dir)
        for path in [data_dir, *data_dir.rglob("*")]:
            os.chown(path, 65534, 65534)
        (data_dir / "recordings").chmod(0o500)
        result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                 "-m", "tests.recorder.child", "unwritable", str(data_dir)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["start"]["errno"] == errno.EACCES
        assert "Permission denied" in out["start"]["error"]
        assert out["existing"][rid][0] == "complete"
    finally:
        shutil.rmtree(base)


@needs_mount_ns
def test_disk_already_full_at_start(tmp_path):
    # Filling the tmpfs first: starting fails cleanly and leaves no half-made recording behind.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    script = ('set -e; mount -t tmpfs -o size=1m,mode=0700 tmpfs "$1"; '
              f'cd {ROOT}; "$PY" -c "from pathlib import Path; import sys; '
              'from recorder.keys import KeyStore; from recorder.audit import AuditLog; '
              'd = Path(sys.argv[1]); KeyStore.open(d, environ={}, create=True); '
              'AuditLog.open(d, environ={}, create=True)" "$1"; '
              'dd if=/dev/zero of="$1/filler" bs=4k 2>/dev/null || true; '
              'exec "$PY" -m tests.recorder.child unwritable "$1"')
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(data_dir)],
                            env=os.environ | {"PY": sys.executable}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["start"]["errno"] == errno.ENOSPC, out
    assert [p for p in out["left_behind"] if not p.startswith(".")] == []
