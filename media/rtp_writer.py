"""Builds a down-track's RTP packets straight into bytes.

Per packet only the header fields, abs-send-time and audio level change; the
extension IDs and this subscriber's MID are fixed when the down-track starts, so
their bytes are prepared once (RFC 8285 one-byte header extensions). The
transport-wide sequence number, when negotiated, goes first and is left zero: it
is filled in as the packet leaves (media/transport_sequence.py).
"""

from __future__ import annotations

import struct
from typing import Optional

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ONE_BYTE_PROFILE = 0xBEDE
# The longest packet pylibsrtp protects (1500 bytes less room for its trailer).
MAX_PACKET_BYTES = 1356

_header = struct.Struct("!BBHLLHH")  # fixed header + extension profile/length
_header_no_ext = struct.Struct("!BBHLL")


class RtpWriter:
    def __init__(self, extensions: list[RTCRtpHeaderExtensionParameters], mid: Optional[str]) -> None:
        ids = {e.uri: e.id for e in extensions}
        transport_cc_id = ids.get(TRANSPORT_CC_URI)
        self.transport_cc_id = transport_cc_id if transport_cc_id and 0 < transport_cc_id < 15 else None
        # the fixed extensions, written once: transport-cc's slot first (at a fixed offset), then the MID
        self._fixed = bytes([(self.transport_cc_id << 4) | 1, 0, 0]) if self.transport_cc_id else b""
        mid_id = ids.get(MID_URI)
        if mid_id and mid and 1 <= len(mid.encode()) <= 16:
            self._fixed += bytes([(mid_id << 4) | (len(mid.encode()) - 1)]) + mid.encode()
        abs_id = ids.get(ABS_SEND_TIME_URI)
        # transport-cc replaces it: a receiver with both estimates from transport-cc, and the
        # 4 bytes keep an FEC packet within what SRTP protects (MAX_PACKET_BYTES)
        self._abs_prefix = bytes([(abs_id << 4) | 2]) if abs_id and not self.transport_cc_id else None
        level_id = ids.get(AUDIO_LEVEL_URI)
        self._level_prefix = (level_id << 4) if level_id else None

    def write(self, *, payload_type: int, marker: int, sequence_number: int, timestamp: int, ssrc: int,
              payload: bytes, abs_send_time: int, audio_level: Optional[tuple[bool, int]] = None) -> bytes:
        ext = self._fixed
        if self._abs_prefix is not None:
            ext += self._abs_prefix + abs_send_time.to_bytes(3, "big")
        if audio_level is not None and self._level_prefix is not None:
            ext += bytes([self._level_prefix, (0x80 if audio_level[0] else 0) | (audio_level[1] & 0x7F)])
        second = (marker << 7) | payload_type
        if not ext:
            return _header_no_ext.pack(0x80, second, sequence_number, timestamp, ssrc) + payload
        pad = -len(ext) % 4
        if pad:
            ext += b"\x00" * pad
        return (_header.pack(0x90, second, sequence_number, timestamp, ssrc, ONE_BYTE_PROFILE, len(ext) // 4)
                + ext + payload)

    def write_padding(self, *, payload_type: int, sequence_number: int, timestamp: int, ssrc: int, size: int,
                      abs_send_time: int) -> bytes:
        """A padding-only packet (RFC 3550 5.1): `size` bytes of padding, the last one counting them.
        Bandwidth probes are made of these; receivers discard them after counting their arrival."""
        if not 1 <= size <= 255:
            raise ValueError("RTP padding is 1 to 255 bytes")
        data = bytearray(self.write(payload_type=payload_type, marker=0, sequence_number=sequence_number,
                                    timestamp=timestamp, ssrc=ssrc, payload=bytes(size - 1) + bytes([size]),
                                    abs_send_time=abs_send_time))
        data[0] |= 0x20
        return bytes(data)
