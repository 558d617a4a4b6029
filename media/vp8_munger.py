"""VP8 picture IDs and TL0PICIDX made continuous across a down-track's switch of layer.

Each simulcast layer numbers its frames on its own. A receiver's VP8 reference finder
orders frames by picture ID: after a switch to a layer whose IDs lie behind the last
ones it saw, it takes the new frames for old ones and drops them until a keyframe
comes that it asked for (Chromium froze ~3 s after a switch). So, like the sequence
numbers (media/rewriter.py), the IDs a down-track sends run on from where they were:
at a switch the new layer's IDs are offset to follow the last ones sent.

RFC 7741 payload descriptor: byte 0 `X R N S R PID`; if X, byte 1 `I L T K`; if I, the
picture ID in 1 byte (M = 0, 7 bits) or 2 bytes (M = 1, 15 bits); if L, TL0PICIDX.
"""

from __future__ import annotations

from typing import Optional


def _fields(payload: bytes) -> tuple[Optional[int], int, Optional[int]]:
    """(offset of the picture ID or None, its width in bits, offset of TL0PICIDX or None)."""
    if len(payload) < 2 or not payload[0] & 0x80:
        return None, 0, None
    flags = payload[1]
    at = 2
    pid_at, width = None, 0
    if flags & 0x80:
        if len(payload) <= at:
            return None, 0, None
        pid_at = at
        width = 15 if payload[at] & 0x80 else 7
        at += 2 if width == 15 else 1
    tl0_at = at if flags & 0x40 and len(payload) > at else None
    return pid_at, width, tl0_at


class Vp8Munger:
    def __init__(self) -> None:
        self._pid_offset = 0
        self._tl0_offset = 0
        self._last_pid: Optional[int] = None  # as sent
        self._last_tl0: Optional[int] = None
        self._switching = False

    def switch(self) -> None:
        """The next packet starts another source (at one of its keyframes)."""
        self._switching = True

    def rewrite(self, payload: bytes) -> bytes:
        """The payload with its picture ID and TL0PICIDX renumbered (itself, uncopied, when
        they stay as they are: until a switch, every packet)."""
        pid_at, width, tl0_at = _fields(payload)
        if pid_at is None and tl0_at is None:
            return payload
        pid = sent_pid = tl0 = sent_tl0 = 0
        if pid_at is not None:
            mask = (1 << width) - 1
            pid = ((payload[pid_at] & 0x7F) << 8 | payload[pid_at + 1]) if width == 15 else payload[pid_at] & 0x7F
            if self._switching and self._last_pid is not None:
                self._pid_offset = (self._last_pid + 1 - pid) & mask
            sent_pid = self._last_pid = (pid + self._pid_offset) & mask
        if tl0_at is not None:
            tl0 = payload[tl0_at]
            if self._switching and self._last_tl0 is not None:
                self._tl0_offset = (self._last_tl0 + 1 - tl0) & 0xFF
            sent_tl0 = self._last_tl0 = (tl0 + self._tl0_offset) & 0xFF
        self._switching = False
        if sent_pid == pid and sent_tl0 == tl0:
            return payload
        out = bytearray(payload)
        if pid_at is not None:
            if width == 15:
                out[pid_at], out[pid_at + 1] = 0x80 | sent_pid >> 8, sent_pid & 0xFF
            else:
                out[pid_at] = sent_pid
        if tl0_at is not None:
            out[tl0_at] = sent_tl0
        return bytes(out)
