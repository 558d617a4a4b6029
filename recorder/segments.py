"""On-disk format of a track file: a sequence of encrypted segments, append-only.

    segment  = header || ciphertext
    header   = magic "CSG1" | index u32 | flags u8 (bit 0: final) | ciphertext length u32   (big-endian, 13 bytes)
    plaintext (inside the ciphertext) = frame*
    frame    = timestamp_ms u64 | rtp_timestamp u32 | flags u8 (bit 0: keyframe) | payload length u32 | payload

The header is in the clear so a reader can walk the file without the key, but it
proves nothing: index and final flag are also in the AEAD's associated data and the
index is the nonce, so a header that lies fails authentication.

A writer killed mid-append leaves a torn last segment. The scanner reports that as a
torn tail (recording incomplete), not as tampering, only when it *looks* like an
interrupted append: a short header, a record running past end of file, or zeros
(an extended-but-unwritten tail after power loss). Anything else that does not parse,
and anything after a final segment, is tampering.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Optional

from . import crypto
from .errors import RecordingIntegrityError

MAGIC = b"CSG1"
HEADER = struct.Struct("!4sIBI")
FLAG_FINAL = 0x01

FRAME_HEADER = struct.Struct("!QIBI")
FRAME_KEYFRAME = 0x01
MAX_PAYLOAD = 8 * 1024 * 1024  # one encoded frame; 4K keyframes are ~1 MB
# A segment holds whole frames up to the writer's target size, or one larger frame alone.
MAX_PLAINTEXT = FRAME_HEADER.size + MAX_PAYLOAD
MAX_CIPHERTEXT = MAX_PLAINTEXT + crypto.TAG_BYTES


def encode_segment(index: int, final: bool, ciphertext: bytes) -> bytes:
    return HEADER.pack(MAGIC, index, FLAG_FINAL if final else 0, len(ciphertext)) + ciphertext


def append_frame(buf: bytearray, timestamp_ms: int, rtp_timestamp: int, keyframe: bool, payload: bytes) -> None:
    buf += FRAME_HEADER.pack(timestamp_ms, rtp_timestamp, FRAME_KEYFRAME if keyframe else 0, len(payload))
    buf += payload


def decode_frames(plaintext: bytes, where: str) -> Iterator[tuple[int, int, bool, bytes]]:
    """(timestamp_ms, rtp_timestamp, keyframe, payload) of each frame in an authenticated segment."""
    view = memoryview(plaintext)
    offset = 0
    while offset < len(view):
        if len(view) - offset < FRAME_HEADER.size:
            raise RecordingIntegrityError(f"{where}: authenticated but malformed (truncated frame header)")
        ts, rtp, flags, length = FRAME_HEADER.unpack_from(view, offset)
        offset += FRAME_HEADER.size
        if length > len(view) - offset:
            raise RecordingIntegrityError(f"{where}: authenticated but malformed (frame overruns segment)")
        yield ts, rtp, bool(flags & FRAME_KEYFRAME), bytes(view[offset:offset + length])
        offset += length


@dataclass(slots=True)
class RawSegment:
    index: int
    final: bool
    ciphertext: bytes
    offset: int


class SegmentScanner:
    """Walks one track file's segments without decrypting them.

    Iterating yields each complete segment in file order and raises
    RecordingIntegrityError on structural tampering; afterwards `final_seen` and
    `torn_bytes` (length of an interrupted last append, 0 if none) describe the end.
    `headers_only`: yield segments without reading their ciphertext (b""), to find one.
    """

    def __init__(self, f: BinaryIO, size: int, where: str, *, headers_only: bool = False) -> None:
        self._f = f
        self._size = size
        self._where = where
        self._headers_only = headers_only
        self.final_seen = False
        self.torn_bytes = 0
        self.count = 0

    def __iter__(self) -> Iterator[RawSegment]:
        offset = 0
        while offset < self._size:
            remaining = self._size - offset
            if self.final_seen:
                raise RecordingIntegrityError(f"{self._where}: {remaining} bytes after the final segment")
            self._f.seek(offset)
            head = self._f.read(min(remaining, HEADER.size))
            if len(head) < HEADER.size:
                self.torn_bytes = remaining
                return
            magic, index, flags, length = HEADER.unpack(head)
            if magic != MAGIC:
                if remaining <= HEADER.size + MAX_CIPHERTEXT and self._all_zero(offset, remaining):
                    self.torn_bytes = remaining
                    return
                raise RecordingIntegrityError(
                    f"{self._where}: no segment header at offset {offset} (segment {self.count})")
            if flags & ~FLAG_FINAL or not crypto.TAG_BYTES <= length <= MAX_CIPHERTEXT:
                raise RecordingIntegrityError(
                    f"{self._where}: corrupt header of segment {self.count} at offset {offset}")
            if index != self.count:
                raise RecordingIntegrityError(
                    f"{self._where}: segment {index} found where segment {self.count} belongs "
                    "(reordered, duplicated, removed or spliced)")
            if HEADER.size + length > remaining:
                self.torn_bytes = remaining
                return
            ciphertext = b"" if self._headers_only else self._f.read(length)
            yield RawSegment(index, bool(flags & FLAG_FINAL), ciphertext, offset)
            self.count += 1
            self.final_seen = bool(flags & FLAG_FINAL)
            offset += HEADER.size + length

    def read(self, segment: RawSegment) -> RawSegment:
        """`segment` (from a headers-only walk) with its ciphertext."""
        self._f.seek(segment.offset)
        length = HEADER.unpack(self._f.read(HEADER.size))[3]
        return RawSegment(segment.index, segment.final, self._f.read(length), segment.offset)

    def _all_zero(self, offset: int, length: int) -> bool:
        self._f.seek(offset)
        data: Optional[bytes] = self._f.read(length)
        return data is not None and not data.strip(b"\0")
