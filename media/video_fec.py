"""Forward error correction on one subscriber's video: RED wrapping and ULPFEC as browsers decode it.

On a lossy downlink a lost packet costs the subscriber a NACK round (an RTT or
more) before its frame can be shown; an FEC packet sent right after the frame
lets the browser rebuild one lost packet of its group at once. The NACK still
goes out (libwebrtc NACKs a gap when it sees it), so FEC buys latency, not
bandwidth: it is sent only while the measured downlink loss calls for it, and
the group shrinks (more FEC) as loss grows.

Wire format (what Chrome's receiver accepts, see media/sdp_video_fec.py):
every video packet goes out as RED with one block (F=0, the media payload
type), FEC as RED with the ulpfec payload type, numbered in the media stream
right after the frame's last packet. FEC never goes between two packets of one
frame: a lost FEC packet is a sequence-number hole, harmless between frames
(VP8 continuity is by picture ID) but fatal inside one.
"""

from __future__ import annotations

from typing import Optional

from .sdp_video_fec import VideoFecPayloadTypes
from .ulpfec import UlpfecEncoder

# (loss at or above, media packets per FEC packet). Below the first row NACK
# alone recovers within the budget and FEC would be pure overhead. At 30 % loss
# a group of 2 rebuilds a lost packet when both others of its group arrive
# (0.7^2 ~ half the losses) for 50 % more video bitrate.
GROUP_FOR_LOSS = ((0.20, 2), (0.12, 3), (0.06, 4), (0.03, 6))
# FEC stops only when loss falls well under where it started, so it does not flap.
OFF_BELOW_LOSS = 0.015


def group_for_loss(loss: float, active: bool) -> Optional[int]:
    """Media packets per FEC packet for this downlink loss (None: no FEC)."""
    for threshold, group in GROUP_FOR_LOSS:
        if loss >= threshold:
            return group
    if active and loss >= OFF_BELOW_LOSS:
        return GROUP_FOR_LOSS[-1][1]
    return None


def red_wrap(media_payload_type: int, payload: bytes) -> bytes:
    """An RFC 2198 payload with one (primary) block: a 1-byte header, F=0."""
    return bytes([media_payload_type & 0x7F]) + payload


class VideoFecSender:
    """Which FEC payloads a down-track sends after each frame, for its current loss."""

    def __init__(self, payload_types: VideoFecPayloadTypes) -> None:
        self.payload_types = payload_types
        self._encoder = UlpfecEncoder()
        self._pending: list[bytes] = []  # FEC payloads waiting for the end of the frame
        self.group: Optional[int] = None
        self.fec_packets = 0

    @property
    def active(self) -> bool:
        return self.group is not None

    def update_loss(self, loss: float) -> None:
        group = group_for_loss(loss, self.active)
        if group is None and self.active:
            self.reset()
        elif group is not None:
            self._encoder.group = group
        self.group = group

    def reset(self) -> None:
        """Drop what is open (source switched, FEC turned off)."""
        self._encoder.flush()
        self._pending.clear()

    def protect(self, packet: bytes) -> list[bytes]:
        """Feed one media packet as the browser will check it (unwrapped, mutable extensions
        zeroed), sent in order. Returns the RED payloads of the FEC packets to send right
        after it: some only when it ends a frame (marker bit)."""
        if not self.active:
            return []
        self._pending += self._encoder.add(packet)
        if not packet[1] & 0x80 or not self._pending:
            return []
        out, self._pending = self._pending, []
        self.fec_packets += len(out)
        return [red_wrap(self.payload_types.ulpfec, fec) for fec in out]
