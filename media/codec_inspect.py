"""Reads just enough of a VP8 / H.264 RTP payload to find keyframes and frame boundaries.

The forwarder never decodes; it only needs to know where a subscriber may start
(the first packet of a keyframe) so that a late joiner gets a decodable picture,
and, for VP8, where frames start and their picture IDs (to tell a lost FEC
packet between two frames from lost media, media/uplink_fec.py).
"""

from __future__ import annotations

from typing import Optional

# (picture ID, modulus): VP8's is 7 or 15 bits long (the M bit), and wraps there
PictureId = tuple[int, int]

# H.264 NAL unit types (RFC 6184)
_NAL_IDR = 5
_NAL_SPS = 7
_NAL_STAP_A = 24
_NAL_FU_A = 28


def vp8_is_keyframe_start(payload: bytes) -> bool:
    """True for the first packet of a VP8 keyframe (RFC 7741 section 4.3)."""
    pos = _vp8_partition_start(payload)
    # VP8 payload header: P bit (inverse keyframe flag) is bit 0
    return pos is not None and not (payload[pos] & 0x01)


def vp8_keyframe_size(payload: bytes) -> Optional[tuple[int, int]]:
    """(width, height) from the first packet of a VP8 keyframe (RFC 6386 section 9.1), else None."""
    pos = _vp8_partition_start(payload)
    return None if pos is None else vp8_frame_size(payload, pos)


def vp8_frame_size(frame: bytes, start: int = 0) -> Optional[tuple[int, int]]:
    """(width, height) of a VP8 frame beginning at `start` (no RTP descriptor: as recorded) when it
    is a keyframe, else None."""
    if len(frame) < start + 10 or frame[start] & 0x01:
        return None
    if frame[start + 3:start + 6] != b"\x9d\x01\x2a":  # a keyframe's start code
        return None
    width = int.from_bytes(frame[start + 6:start + 8], "little") & 0x3FFF  # (the top 2 bits: upscaling)
    height = int.from_bytes(frame[start + 8:start + 10], "little") & 0x3FFF
    return (width, height) if width and height else None


def _vp8_partition_start(payload: bytes) -> Optional[int]:
    """Where the VP8 payload header starts in the first packet of a frame (None: not one)."""
    if not payload:
        return None
    first = payload[0]
    start_of_partition = bool(first & 0x10)
    partition_id = first & 0x07
    if not start_of_partition or partition_id != 0:
        return None
    pos = 1
    if first & 0x80:  # X: extended control bits present
        if len(payload) < 2:
            return None
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= pos:
                return None
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
            pos += 1
    return pos if len(payload) > pos else None


def vp8_starts_frame(payload: bytes) -> bool:
    """The first packet of a VP8 frame: payload descriptor S bit set, partition 0."""
    # payload descriptor, first byte: X R N S R PID(3)
    return bool(payload) and bool(payload[0] & 0x10) and (payload[0] & 0x07) == 0


def vp8_picture_id(payload: bytes) -> Optional[PictureId]:
    """The picture ID of a VP8 payload descriptor (RFC 7741), if it has one."""
    # X R N S R PID(3) | I L T K RSV(4) | M PictureID(7) [PictureID(8) when M]
    if len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return None
    if not payload[2] & 0x80:
        return payload[2], 1 << 7
    if len(payload) < 4:
        return None
    return (payload[2] & 0x7F) << 8 | payload[3], 1 << 15


def h264_is_keyframe_start(payload: bytes) -> bool:
    """True for a packet that starts an IDR access unit (SPS or IDR slice start)."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (_NAL_IDR, _NAL_SPS):
        return True
    if nal_type == _NAL_STAP_A:
        pos = 1
        while pos + 2 < len(payload):
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > len(payload):
                return False
            if payload[pos] & 0x1F in (_NAL_IDR, _NAL_SPS):
                return True
            pos += size
        return False
    if nal_type == _NAL_FU_A and len(payload) >= 2:
        fu_header = payload[1]
        return bool(fu_header & 0x80) and (fu_header & 0x1F) in (_NAL_IDR, _NAL_SPS)
    return False


def keyframe_detector(codec_name: str):  # -> Callable[[bytes], bool]
    """The keyframe test for a codec; audio codecs and unknown video never start keyframes."""
    name = codec_name.upper()
    if name == "VP8":
        return vp8_is_keyframe_start
    if name == "H264":
        return h264_is_keyframe_start
    return None


def keyframe_size_reader(codec_name: str):  # -> Callable[[bytes], Optional[tuple[int, int]]] | None
    """What reads a keyframe's picture size from its first packet; None where the payload
    does not say it (H.264 keeps it in the SPS, which is not parsed)."""
    return vp8_keyframe_size if codec_name.upper() == "VP8" else None
