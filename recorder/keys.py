"""Key-encryption key (KEK) and the per-recording wrapped data keys.

The KEK comes from, in order: CONSULT_RECORDING_KEK (base64 of 32 bytes), a key file
given by the caller, or the embedded default `<data dir>/recording.kek`, generated
(mode 0600) when the first recording starts. Read-only commands never generate one:
a fresh KEK could not open anything that exists.

Each recording keeps its data key wrapped under the KEK in `<recording>/key.json`;
the manifest points at that file. Rotation re-wraps those small files under a new
KEK, never the media. It is resumable: the new KEK is first written next to the old
one (`recording.kek.next`), every key is re-wrapped, and only then does the new file
replace the old one. Until then both KEKs can unwrap (each key file names its KEK),
so an interrupted rotation never makes a recording unreadable.

Writers wrap a new data key under a shared lock and rotation holds it exclusively,
so no recording can be wrapped under a KEK that rotation is about to retire.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cryptography.exceptions import InvalidTag

from . import crypto
from .errors import KeyUnavailableError, RecordingIntegrityError, RecordingStorageError
from .fsutil import FILE_MODE, atomic_write, fsync_dir, make_private_dir, write_all
from .manifest import is_recording_id

log = logging.getLogger(__name__)

KEK_ENV = "CONSULT_RECORDING_KEK"
NEW_KEK_ENV = "CONSULT_RECORDING_NEW_KEK"  # the next KEK when the current one comes from the environment
KEK_FILE_NAME = "recording.kek"
DATA_KEY_FILE = "key.json"
_LOCK_NAME = ".keys.lock"


def encode_kek(kek: bytes) -> str:
    return base64.b64encode(kek).decode()


def decode_kek(text: str, where: str) -> bytes:
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        kek = b""
    if len(kek) != crypto.KEY_BYTES:
        raise KeyUnavailableError(f"{where}: not a base64-encoded {crypto.KEY_BYTES}-byte key")
    return kek


def _read_kek_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("KEK file %s is accessible to group/others (mode %o); it should be 0600", path, mode & 0o777)
    return decode_kek(path.read_text(), str(path))


@dataclass
class RotationResult:
    old_kek_id: str
    new_kek_id: str
    rewrapped: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # recording id -> why it was not re-wrapped
    completed: bool = False  # the old KEK is retired


class KeyStore:
    """The KEK of one data directory and the wrapped data keys of its recordings."""

    def __init__(self, recordings_dir: Path, *, kek_file: Optional[Path] = None, kek_env: Optional[str] = None,
                 next_kek_env: Optional[str] = None) -> None:
        if (kek_file is None) == (kek_env is None):
            raise ValueError("exactly one of kek_file / kek_env")
        self.recordings_dir = recordings_dir
        self.kek_file = kek_file
        self._kek_env = kek_env
        self._next_kek_env = next_kek_env

    @classmethod
    def open(cls, data_dir: Path, *, kek_file: Optional[Path] = None, environ: Mapping[str, str] = os.environ,
             create: bool = False) -> "KeyStore":
        """The data directory's key store; `create` generates the default KEK file if there is none."""
        recordings_dir = data_dir / "recordings"
        if environ.get(KEK_ENV):
            decode_kek(environ[KEK_ENV], KEK_ENV)  # fail early on a malformed value
            return cls(recordings_dir, kek_env=environ[KEK_ENV], next_kek_env=environ.get(NEW_KEK_ENV))
        path = kek_file or data_dir / KEK_FILE_NAME
        if not path.exists():
            if not create:
                raise KeyUnavailableError(
                    f"no recording key-encryption key at {path} (it is generated when the first recording "
                    f"starts; set {KEK_ENV} or pass the key file)")
            try:
                make_private_dir(path.parent)
                atomic_write(path, (encode_kek(crypto.new_key()) + "\n").encode(), exclusive=True)
                log.info("generated recording key-encryption key %s", path)
            except FileExistsError:
                pass  # another process created it first; use theirs
            except OSError as exc:
                raise RecordingStorageError.from_os_error(
                    "cannot create the recording key-encryption key", exc) from exc
        return cls(recordings_dir, kek_file=path)

    # -- the KEK ---------------------------------------------------------------------------------

    def _kek_path(self) -> Path:
        """The KEK file; only for a store whose KEK is not in the environment (__init__ takes one or the other)."""
        assert self.kek_file is not None, "the KEK comes from the environment"
        return self.kek_file

    @property
    def _next_path(self) -> Path:
        kek_file = self._kek_path()
        return kek_file.with_name(kek_file.name + ".next")

    def current(self) -> tuple[str, bytes]:
        """(kek id, KEK), read afresh so a long-running writer sees a completed rotation."""
        if self._kek_env is not None:
            kek = decode_kek(self._kek_env, KEK_ENV)
        else:
            kek_file = self._kek_path()
            try:
                kek = _read_kek_file(kek_file)
            except FileNotFoundError:
                raise KeyUnavailableError(f"recording key-encryption key {kek_file} is missing") from None
        return crypto.kek_id(kek), kek

    def _pending(self) -> Optional[bytes]:
        if self._kek_env is not None:
            return decode_kek(self._next_kek_env, NEW_KEK_ENV) if self._next_kek_env else None
        try:
            return _read_kek_file(self._next_path)
        except FileNotFoundError:
            return None

    def _candidates(self) -> dict[str, bytes]:
        keks = dict([self.current()])
        pending = self._pending()
        if pending is not None:
            keks[crypto.kek_id(pending)] = pending
        return keks

    def _lock(self, exclusive: bool) -> contextlib.AbstractContextManager[None]:
        return keys_lock(self.recordings_dir, exclusive)

    # -- wrapped data keys -----------------------------------------------------------------------

    def store_new_data_key(self, recording_dir: Path, recording_id: str, data_key: bytes) -> str:
        """Wrap a new recording's data key under the current KEK into key.json. Returns the kek id."""
        with self._lock(exclusive=False):
            kid, kek = self.current()
            nonce, wrapped = crypto.wrap_data_key(kek, recording_id, data_key)
            atomic_write(recording_dir / DATA_KEY_FILE, _key_file(kid, nonce, wrapped), exclusive=True)
        return kid

    def load_data_key(self, recording_dir: Path, recording_id: str) -> bytes:
        path = recording_dir / DATA_KEY_FILE
        try:
            kid, nonce, wrapped = _parse_key_file(path.read_bytes(), recording_id)
        except FileNotFoundError:
            raise KeyUnavailableError(f"recording {recording_id}: its data key is gone (purged, or deleted)") from None
        keks = self._candidates()
        if kid not in keks:
            raise KeyUnavailableError(
                f"recording {recording_id}: data key is wrapped under KEK {kid}, not the configured KEK "
                f"{', '.join(keks)} (wrong key file, or a key retired by rotation)")
        try:
            return crypto.unwrap_data_key(keks[kid], recording_id, nonce, wrapped)
        except InvalidTag:
            raise RecordingIntegrityError(
                f"recording {recording_id}: wrapped data key fails authentication "
                "(altered, or copied from another recording)") from None

    def rotate(self) -> RotationResult:
        """Re-wrap every data key under a new KEK and retire the old one (see the module docstring)."""
        with self._lock(exclusive=True):
            old_id, old = self.current()
            new = self._pending()
            if new is None:
                if self._kek_env is not None:
                    raise KeyUnavailableError(
                        f"the KEK comes from {KEK_ENV}: put the new one in {NEW_KEK_ENV} to rotate")
                new = crypto.new_key()
                try:
                    atomic_write(self._next_path, (encode_kek(new) + "\n").encode(), exclusive=True)
                except OSError as exc:
                    raise RecordingStorageError.from_os_error("cannot write the new KEK", exc) from exc
            result = RotationResult(old_id, crypto.kek_id(new))
            if result.new_kek_id == old_id:
                raise KeyUnavailableError("the new KEK is the current one")
            for recording_dir in sorted(p for p in self.recordings_dir.iterdir() if is_recording_id(p.name)):
                self._rewrap(recording_dir, old, new, result)
            if result.problems:
                return result  # old KEK kept, `.next` kept: fix the problems and run again to resume
            if self.kek_file is not None:
                os.replace(self._next_path, self.kek_file)
                fsync_dir(self.kek_file.parent)
            result.completed = True
            return result

    def _rewrap(self, recording_dir: Path, old: bytes, new: bytes, result: RotationResult) -> None:
        rid = recording_dir.name
        path = recording_dir / DATA_KEY_FILE
        try:
            kid, nonce, wrapped = _parse_key_file(path.read_bytes(), rid)
        except FileNotFoundError:
            return  # purged (key already destroyed): nothing to re-wrap
        except RecordingIntegrityError as exc:
            result.problems[rid] = str(exc)
            return
        if kid == result.new_kek_id:
            result.already_done.append(rid)
            return
        if kid != result.old_kek_id:
            result.problems[rid] = f"wrapped under unknown KEK {kid}"
            return
        try:
            data_key = crypto.unwrap_data_key(old, rid, nonce, wrapped)
        except InvalidTag:
            result.problems[rid] = "wrapped data key fails authentication"
            return
        new_nonce, new_wrapped = crypto.wrap_data_key(new, rid, data_key)
        try:
            atomic_write(path, _key_file(result.new_kek_id, new_nonce, new_wrapped))
        except OSError as exc:
            raise RecordingStorageError.from_os_error(f"cannot re-wrap the data key of {rid}", exc) from exc
        result.rewrapped.append(rid)


@contextlib.contextmanager
def keys_lock(recordings_dir: Path, exclusive: bool) -> Iterator[None]:
    """Shared: wrapping a new data key. Exclusive: rotation, shredding (so neither resurrects a key)."""
    make_private_dir(recordings_dir)
    fd = os.open(recordings_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def destroy_data_key(recording_dir: Path) -> bool:
    """Crypto-shred a recording: overwrite its wrapped data key, make that durable, unlink it.

    Once this returns the media is undecryptable with the KEK, whatever happens to the
    rest of the files. Overwriting in place is best effort (journalling file systems and
    SSDs may keep old blocks); what makes a lingering copy useless is retiring the KEK
    that wrapped it, i.e. rotating the KEK after a purge.
    """
    path = recording_dir / DATA_KEY_FILE
    with keys_lock(recording_dir.parent, exclusive=True):
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return False
        try:
            write_all(fd, b"\0" * os.fstat(fd).st_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(path)
        fsync_dir(recording_dir)
    return True


def _key_file(kid: str, nonce: bytes, wrapped: bytes) -> bytes:
    return (json.dumps({"format": 1, "alg": "AES-256-GCM", "kek_id": kid,
                        "nonce": base64.b64encode(nonce).decode(),
                        "wrapped": base64.b64encode(wrapped).decode()}, indent=1) + "\n").encode()


def _parse_key_file(raw: bytes, recording_id: str) -> tuple[str, bytes, bytes]:
    try:
        doc = json.loads(raw)
        return str(doc["kek_id"]), base64.b64decode(doc["nonce"]), base64.b64decode(doc["wrapped"])
    except (ValueError, KeyError, TypeError):
        raise RecordingIntegrityError(f"recording {recording_id}: {DATA_KEY_FILE} is corrupt") from None
