"""Small durable-write helpers: every file this package creates is 0600, every directory 0700."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    # os.write may write less than asked (a disk filling up mid-write); loop until
    # everything is written or the OS raises (ENOSPC, EIO, ...).
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(path: Path) -> None:
    """Make a create/rename/unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new content, never a mix.

    exclusive: fail with FileExistsError if `path` already exists (first-run key generation
    racing another process must not overwrite a key that may already wrap data).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)  # atomic "create if absent"
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
