"""AES-256-GCM for segments and for wrapping data keys; nothing here touches files.

Nonces. Every recording has its own fresh 256-bit data key (DEK), and a recording is
never reopened for writing: a restarted writer starts a new recording with a new key.
Under one DEK, a segment's nonce is its position, track number (4 bytes) || segment
index (8 bytes), so two segments can never share a nonce and none is stored: a
reader recomputes it from where it expects the segment, which also makes a moved
segment fail. Wrapping uses a random 96-bit nonce per wrap under the KEK; a KEK
wraps one key per recording (and again per rotation), far below the 2^32 wraps at
which random GCM nonces start to be a concern.

Key separation: the DEK itself is never used directly; HKDF derives one key for
segments and one for the manifest MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import RecordingIntegrityError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAX_SEGMENT_INDEX = 2**32 - 1  # the on-disk header stores it in 4 bytes

_SEGMENT_AAD_MAGIC = b"consult-sfu/segment/v1\x00"
_WRAP_AAD_MAGIC = b"consult-sfu/data-key/v1\x00"


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(key)


def _lp(data: bytes, width: str = "!H") -> bytes:
    # Length-prefixed, so no two different (id, track) pairs encode to the same bytes.
    return struct.pack(width, len(data)) + data


def segment_aad(recording_id: str, track_no: int, track_id: str, index: int, final: bool) -> bytes:
    """Associated data binding a segment to its recording, track, position and final flag."""
    return (_SEGMENT_AAD_MAGIC + _lp(recording_id.encode()) + struct.pack("!I", track_no)
            + _lp(track_id.encode()) + struct.pack("!QB", index, 1 if final else 0))


def segment_nonce(track_no: int, index: int) -> bytes:
    return struct.pack("!IQ", track_no, index)


class SegmentCipher:
    """Seals and opens the segments of one recording."""

    def __init__(self, data_key: bytes, recording_id: str) -> None:
        if len(data_key) != KEY_BYTES:
            raise ValueError("data key must be 32 bytes")
        self.recording_id = recording_id
        self._aead = AESGCM(_hkdf(data_key, b"consult-sfu/v1 segment key"))
        self._manifest_mac_key = _hkdf(data_key, b"consult-sfu/v1 manifest mac")

    def seal(self, track_no: int, track_id: str, index: int, final: bool, plaintext: bytes | bytearray) -> bytes:
        if not 0 <= index <= MAX_SEGMENT_INDEX:
            raise ValueError("segment index out of range")
        aad = segment_aad(self.recording_id, track_no, track_id, index, final)
        return self._aead.encrypt(segment_nonce(track_no, index), bytes(plaintext), aad)

    def open(self, track_no: int, track_id: str, index: int, final: bool, ciphertext: bytes) -> bytes:
        aad = segment_aad(self.recording_id, track_no, track_id, index, final)
        try:
            return self._aead.decrypt(segment_nonce(track_no, index), ciphertext, aad)
        except InvalidTag:
            raise RecordingIntegrityError(
                f"track {track_id!r} segment {index}: authentication failed "
                "(altered, reordered, spliced from another recording, or wrong final flag)") from None

    def manifest_mac(self, canonical_manifest: bytes) -> str:
        return hmac.new(self._manifest_mac_key, canonical_manifest, hashlib.sha256).hexdigest()


def wrap_data_key(kek: bytes, recording_id: str, data_key: bytes) -> tuple[bytes, bytes]:
    """Encrypt a DEK under the KEK, bound to its recording id. Returns (nonce, wrapped)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(kek).encrypt(nonce, data_key, _WRAP_AAD_MAGIC + recording_id.encode())


def unwrap_data_key(kek: bytes, recording_id: str, nonce: bytes, wrapped: bytes) -> bytes:
    """Raises InvalidTag if the KEK is wrong or the wrapped key / its binding was altered."""
    return AESGCM(kek).decrypt(nonce, wrapped, _WRAP_AAD_MAGIC + recording_id.encode())


def kek_id(kek: bytes) -> str:
    """A public fingerprint naming a KEK (it reveals nothing useful about a random 256-bit key)."""
    return hashlib.sha256(b"consult-sfu/kek-id/v1\x00" + kek).hexdigest()[:16]
