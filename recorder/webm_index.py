"""Where a WebM that is still being written may be cut, and where playback may start.

A watermarked replay is served while it renders (recorder/replay_render.py writes it
front to back; the page appends it to a MediaSource). The page may only be given whole
top-level elements, and after a seek it must start at a cluster whose first video block
is a keyframe. This scanner reads the byte stream as the muxer writes it and keeps:

- `init_bytes`: the size of everything before the first cluster (EBML header, Segment
  header, Info, Tracks ...: a MediaSource's initialisation segment);
- `complete_bytes`: the end of the last complete top-level element (what may be served);
- `points`: (time in ms, byte offset) of every cluster that starts a random-access point;
- `complete_ms`: the time of the last block in the complete clusters (how far what may be
  served plays: the muxer writes a cluster once the next one begins, so a cluster's start
  is known a cluster before its end).

It holds only the element being written (a cluster: one GOP). The muxer must write the
Segment with an unknown size and its children with known sizes, which is what
libavformat's Matroska muxer does on a non-seekable output.
"""

from __future__ import annotations

from typing import Optional

EBML_HEADER = 0x1A45DFA3
SEGMENT = 0x18538067
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_TYPE = 0x83
CLUSTER = 0x1F43B675
TIMECODE = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
BLOCK = 0xA1
REFERENCE_BLOCK = 0xFB
VIDEO_TRACK_TYPE = 1


class WebmIndexError(ValueError):
    """The stream is not a WebM this scanner can follow (it is a bug in the writer, not a user error)."""


def _vint(buf: bytes | bytearray, pos: int, *, keep_marker: bool = False) -> Optional[tuple[int, int, bool]]:
    """(value, length, all value bits set) of the EBML variable-length integer at pos; None if incomplete."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise WebmIndexError(f"invalid EBML integer at {pos}")
    if pos + length > len(buf):
        return None
    value = first if keep_marker else first & ((0x80 >> (length - 1)) - 1)
    for k in range(1, length):
        value = (value << 8) | buf[pos + k]
    unknown = (first & ((0x80 >> (length - 1)) - 1)) == (0x80 >> (length - 1)) - 1 and all(
        b == 0xFF for b in buf[pos + 1:pos + length])
    return value, length, unknown


def _header(buf: bytes | bytearray, pos: int) -> Optional[tuple[int, int, int, bool]]:
    """(element id, header length, data size, size unknown) at pos; None if incomplete."""
    ident = _vint(buf, pos, keep_marker=True)
    if ident is None:
        return None
    size = _vint(buf, pos + ident[1])
    if size is None:
        return None
    return ident[0], ident[1] + size[1], size[0], size[2]


def _children(buf: bytes | bytearray, start: int, end: int):
    """(id, data start, data end) of the elements in buf[start:end]."""
    pos = start
    while pos < end:
        head = _header(buf, pos)
        if head is None or head[3]:
            raise WebmIndexError(f"truncated or unsized child element at {pos}")
        ident, hlen, size, _ = head
        yield ident, pos + hlen, pos + hlen + size
        pos += hlen + size


def _uint(buf: bytes | bytearray, start: int, end: int) -> int:
    return int.from_bytes(buf[start:end], "big")


class ClusterIndex:
    """Feed it the muxer's output in order (`feed`); read the three figures at any time."""

    def __init__(self) -> None:
        self._buf = bytearray()   # bytes from self._base on that are not yet a complete element
        self._base = 0            # stream offset of self._buf[0]
        self._in_segment = False
        self._video_tracks: set[int] = set()
        self.init_bytes: Optional[int] = None
        self.complete_bytes = 0
        self.points: list[tuple[int, int]] = []
        self.complete_ms = 0

    @property
    def total_bytes(self) -> int:
        return self._base + len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data
        pos = 0
        while True:
            head = _header(self._buf, pos)
            if head is None:
                break
            ident, hlen, size, unknown = head
            if ident == SEGMENT and not self._in_segment:
                self._in_segment = True  # its size is unknown while it is written: descend into it
                pos += hlen
                self.complete_bytes = self._base + pos
                continue
            if unknown:
                raise WebmIndexError(f"element {ident:#x} at {self._base + pos} has an unknown size")
            if pos + hlen + size > len(self._buf):
                break
            self._element(ident, pos, pos + hlen, pos + hlen + size)
            pos += hlen + size
            self.complete_bytes = self._base + pos
        del self._buf[:pos]
        self._base += pos

    def _element(self, ident: int, at: int, start: int, end: int) -> None:
        offset = self._base + at
        if ident == TRACKS:
            for child, cs, ce in _children(self._buf, start, end):
                if child != TRACK_ENTRY:
                    continue
                fields = {i: _uint(self._buf, s, e) for i, s, e in _children(self._buf, cs, ce)
                          if i in (TRACK_NUMBER, TRACK_TYPE)}
                if fields.get(TRACK_TYPE) == VIDEO_TRACK_TYPE:
                    self._video_tracks.add(fields.get(TRACK_NUMBER, 0))
        elif ident == CLUSTER:
            if self.init_bytes is None:
                self.init_bytes = offset
            timecode: Optional[int] = None
            random_access: Optional[bool] = None  # a cluster without video (sound only) starts anywhere
            last = 0  # the newest block's time in the cluster, relative to its timecode
            for child, cs, ce in _children(self._buf, start, end):
                if child == TIMECODE:
                    timecode = _uint(self._buf, cs, ce)
                elif child in (SIMPLE_BLOCK, BLOCK_GROUP):
                    if random_access is None:
                        random_access = self._video_block(child, cs, ce)
                    last = max(last, self._block_time(child, cs, ce))
            if timecode is None:
                raise WebmIndexError(f"cluster at {offset} has no timecode")
            if random_access is not False:
                self.points.append((timecode, offset))
            self.complete_ms = max(self.complete_ms, timecode + last)

    def _block_time(self, kind: int, start: int, end: int) -> int:
        """A block's time relative to its cluster's timecode (a signed 16-bit field after the track number)."""
        if kind == BLOCK_GROUP:
            block = next(((cs, ce) for child, cs, ce in _children(self._buf, start, end) if child == BLOCK), None)
            if block is None:
                return 0
            start = block[0]
        track = _vint(self._buf, start)
        if track is None:
            return 0
        at = start + track[1]
        return int.from_bytes(self._buf[at:at + 2], "big", signed=True)

    def _video_block(self, kind: int, start: int, end: int) -> Optional[bool]:
        """For a video block: whether it is a keyframe; None for other tracks' blocks."""
        if kind == SIMPLE_BLOCK:
            track = _vint(self._buf, start)
            if track is None or track[0] not in self._video_tracks:
                return None
            return bool(self._buf[start + track[1] + 2] & 0x80)
        block_track, referenced = None, False
        for child, cs, _ in _children(self._buf, start, end):
            if child == BLOCK:
                track = _vint(self._buf, cs)
                block_track = track[0] if track else None
            elif child == REFERENCE_BLOCK:
                referenced = True
        if block_track not in self._video_tracks:
            return None
        return not referenced
