"""Exception types callers catch and report.

`RecordingStorageError` is the one the media plane must expect while recording:
a full disk or an unwritable directory stops that recording, never the process.
"""

from __future__ import annotations

import os
from typing import Optional


class RecorderError(Exception):
    """Base of every error this package raises on purpose."""


class RecordingStorageError(RecorderError):
    """The recording (or audit log) could not be written: disk full, read-only, no permission, I/O error."""

    def __init__(self, message: str, *, errno: Optional[int] = None, path: Optional[os.PathLike | str] = None) -> None:
        super().__init__(message)
        self.errno = errno
        self.path = path

    @classmethod
    def from_os_error(cls, what: str, exc: OSError) -> "RecordingStorageError":
        reason = os.strerror(exc.errno) if exc.errno else str(exc)  # "No space left on device", "Read-only file system"
        message = f"{what}: {reason}" + (f" [{exc.filename}]" if exc.filename else "")
        return cls(message, errno=exc.errno, path=exc.filename)


class RecordingIntegrityError(RecorderError):
    """A segment, manifest or wrapped key failed authentication or is structurally corrupt: tampering."""


class KeyUnavailableError(RecorderError):
    """No key-encryption key, a different one, or the data key was destroyed (purged)."""


class RecordingNotFoundError(RecorderError):
    pass


class RecordingStateError(RecorderError):
    """Misuse of a writer: writing after close or after a storage failure, unknown track."""
