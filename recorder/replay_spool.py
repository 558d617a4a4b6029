"""A growing file, encrypted at rest, written by one process and read by another while it grows.

A watermarked replay is rendered to disk (a 20-minute 720p replay is ~400 MB: too much
to hold in memory per viewer) by a render process (recorder/replay_worker.py) and served
with HTTP Range by the server while it grows. Decrypted recordings never reach the disk
in clear, and neither do these: the file is a sequence of records, each AES-256-GCM
under a key made for this file by the server, handed to the render process through a
pipe and held by nobody else. A crash leaves ciphertext nobody can open (the cache
directory is wiped at start-up). The file is 0600 in a 0700 directory as well.

Records. The writer seals plaintext only up to where the reader may serve (the end of a
complete WebM element, recorder/webm_index.py), in records of at most RECORD bytes, and
tells the reader where each ends. Record i holding plaintext [start, end) sits at file
offset start + i * TAG; its nonce is i (one key per file, every record written once);
its associated data names the file, the record and its plaintext offset, so records
cannot be moved, swapped or cut.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import RecordingIntegrityError, RecordingStorageError
from .fsutil import FILE_MODE, write_all

RECORD = 64 * 1024
TAG = 16
KEY_BYTES = 32
_AAD = b"consult-sfu/replay-spool/v2\x00"


def new_secret() -> tuple[bytes, bytes]:
    """(key, file id) for one spool file."""
    return AESGCM.generate_key(bit_length=256), os.urandom(16)


def create(path: Path) -> None:
    """Make the (empty) file, private, before either side opens it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    except OSError as exc:
        raise RecordingStorageError.from_os_error("cannot create a replay cache file", exc) from exc


def _aad(file_id: bytes, index: int, start: int) -> bytes:
    return _AAD + file_id + struct.pack("!QQ", index, start)


def _nonce(index: int) -> bytes:
    return struct.pack("!IQ", 0, index)


class SpoolWriter:
    """The render process's end: plaintext in, sealed records out (append-only)."""

    def __init__(self, path: Path, key: bytes, file_id: bytes) -> None:
        self._aead = AESGCM(key)
        self._file_id = file_id
        self._pending = bytearray()   # plaintext from self.sealed on
        self.sealed = 0               # plaintext bytes in records
        self.size = 0                 # plaintext bytes appended
        self._records = 0
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot open the replay cache file", exc) from exc

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += data
        self.size += len(data)

    def seal(self, upto: int) -> list[int]:
        """Seals plaintext up to offset `upto`; returns the plaintext end of every new record."""
        ends = []
        while self.sealed < upto:
            length = min(RECORD, upto - self.sealed)
            chunk = bytes(self._pending[:length])
            sealed = self._aead.encrypt(_nonce(self._records), chunk, _aad(self._file_id, self._records, self.sealed))
            try:
                write_all(self._fd, sealed)
            except OSError as exc:
                raise RecordingStorageError.from_os_error("cannot write the replay cache", exc) from exc
            del self._pending[:length]
            self.sealed += length
            self._records += 1
            ends.append(self.sealed)
        return ends

    def finish(self) -> list[int]:
        return self.seal(self.size)

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


class SpoolReader:
    """The server's end: reads plaintext below `size` (what has been sealed and announced)."""

    def __init__(self, path: Path, key: bytes, file_id: bytes) -> None:
        self.path = path
        self._aead = AESGCM(key)
        self._file_id = file_id
        self._lock = threading.Lock()
        self._ends: list[int] = []     # plaintext end of each record
        self.removed = False
        self._reading = 0              # reads in progress: the descriptor closes after the last one
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot open the replay cache file", exc) from exc

    @property
    def size(self) -> int:
        with self._lock:
            return self._ends[-1] if self._ends else 0

    def add(self, ends: list[int]) -> None:
        with self._lock:
            if any(b <= a for a, b in zip([self._ends[-1] if self._ends else 0, *ends], ends)):
                raise ValueError("record ends must increase")
            self._ends.extend(ends)

    def disk_bytes(self) -> int:
        with self._lock:
            return (self._ends[-1] if self._ends else 0) + len(self._ends) * TAG

    def read(self, first: int, end: int) -> bytes:
        """Plaintext bytes [first, end). Raises RecordingIntegrityError if the file was altered,
        RecordingStorageError if it was removed (e.g. purged) or cannot be read."""
        with self._lock:
            if self.removed:
                raise RecordingStorageError("the replay cache file was removed")
            if not 0 <= first <= end <= (self._ends[-1] if self._ends else 0):
                raise ValueError(f"range {first}-{end} is not in what has been written")
            ends = self._ends
            self._reading += 1
        try:
            out = bytearray()
            index = bisect.bisect_right(ends, first)
            while first < end:
                start = ends[index - 1] if index else 0
                record = self._open(index, start, ends[index])
                out += record[first - start:min(end, ends[index]) - start]
                first = ends[index]
                index += 1
            return bytes(out)
        finally:
            with self._lock:
                self._reading -= 1
                close = self.removed and not self._reading
            if close:
                self._close()

    def _open(self, index: int, start: int, end: int) -> bytes:
        try:
            sealed = os.pread(self._fd, end - start + TAG, start + index * TAG)
        except OSError as exc:
            raise RecordingStorageError.from_os_error("cannot read the replay cache", exc) from exc
        try:
            return self._aead.decrypt(_nonce(index), sealed, _aad(self._file_id, index, start))
        except InvalidTag:
            raise RecordingIntegrityError(
                f"replay cache record {index} of {self.path.name} fails authentication") from None

    def _close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass

    def remove(self) -> None:
        """Deletes the file now; the descriptor closes once no read is using it. Idempotent."""
        with self._lock:
            if self.removed:
                return
            self.removed = True
            close = not self._reading
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass  # the recording's cache was purged first
        if close:
            self._close()
