"""Turns a video track's RTP packets back into encoded frames, waiting a bounded time.

For the taps that need whole frames (recording, the decoder that feeds frame
processors), never for forwarding. aiortc's jitter buffer holds everything
behind a lost packet until a PLI fixes it (seconds). Here a gap is waited for at
most `max_wait_s` (time for a NACK round or two); then the broken frame is
dropped, a keyframe is asked for once, and delta frames are skipped until a
complete keyframe arrives, because they could not be decoded anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from .codec_inspect import keyframe_detector
from .seqnum import seq_add, seq_diff

MAX_PENDING_PACKETS = 2048


@dataclass(slots=True)
class EncodedFrame:
    rtp_timestamp: int
    keyframe: bool
    payloads: list[bytes]  # RTP payloads in order (still packetised for the codec)
    first_seq: int
    last_seq: int
    completed_at: float


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: int
    payload: bytes
    arrived_at: float
    keyframe_start: bool


class FrameAssembler:
    def __init__(self, codec_name: str, *, max_wait_s: float = 0.3,
                 on_keyframe_needed: Callable[[], None] = lambda: None) -> None:
        self._is_keyframe_start = keyframe_detector(codec_name) or (lambda payload: False)
        self.max_wait_s = max_wait_s
        self._on_keyframe_needed = on_keyframe_needed
        self._packets: dict[int, _Packet] = {}
        self._next_seq: Optional[int] = None  # first packet of the next frame to emit
        self._blocked_since: Optional[float] = None
        self._need_keyframe = True  # nothing decodable before the first keyframe
        self.frames_emitted = 0
        self.frames_dropped = 0
        self.keyframe_requests = 0

    def add(self, seq: int, timestamp: int, marker: int, payload: bytes, now: float) -> list[EncodedFrame]:
        if self._next_seq is not None and seq_diff(seq, self._next_seq) < 0:
            return []  # belongs to a frame already emitted or dropped
        self._packets[seq] = _Packet(timestamp, marker, payload, now, self._is_keyframe_start(payload))
        if len(self._packets) > MAX_PENDING_PACKETS:
            self._resync(now)
        if self._next_seq is None:
            if not self._packets[seq].keyframe_start:
                return []
            self._next_seq = seq
        return self.poll(now)

    def poll(self, now: float) -> list[EncodedFrame]:
        """Emit what is complete; give up on a frame blocked longer than max_wait_s."""
        frames: list[EncodedFrame] = []
        while self._next_seq is not None:
            frame = self._complete_frame_at(self._next_seq, now)
            if frame is None:
                if not self._packets:
                    self._blocked_since = None  # idle (a paused camera), not a loss
                    break
                if self._blocked_since is None:
                    self._blocked_since = now
                if now - self._blocked_since < self.max_wait_s:
                    break
                self._drop_blocked_frame(now)
                continue
            self._blocked_since = None
            self._next_seq = seq_add(frame.last_seq, 1)
            if self._need_keyframe and not frame.keyframe:
                self.frames_dropped += 1  # undecodable without the lost reference
                continue
            self._need_keyframe = False
            self.frames_emitted += 1
            frames.append(frame)
        return frames

    def _complete_frame_at(self, start: int, now: float) -> Optional[EncodedFrame]:
        first = self._packets.get(start)
        if first is None:
            return None
        payloads = []
        seq = start
        while True:
            packet = self._packets.get(seq)
            if packet is None or packet.timestamp != first.timestamp:
                return None
            payloads.append(packet.payload)
            if packet.marker:
                break
            seq = seq_add(seq, 1)
        for s in range(len(payloads)):
            del self._packets[seq_add(start, s)]
        return EncodedFrame(first.timestamp, first.keyframe_start, payloads, start, seq, now)

    def _drop_blocked_frame(self, now: float) -> None:
        """Skip to the next packet that certainly starts a frame, and ask for a keyframe."""
        blocked = self._next_seq
        assert blocked is not None  # poll() drops only a frame it is waiting at
        self.frames_dropped += 1
        self._blocked_since = None
        starts = [s for s, p in self._packets.items()
                  if seq_diff(s, blocked) > 0 and (p.keyframe_start or self._follows_frame_end(s))]
        if not self._need_keyframe:
            self._need_keyframe = True
            self.keyframe_requests += 1
            self._on_keyframe_needed()
        if starts:
            next_seq = self._next_seq = min(starts, key=lambda s: seq_diff(s, blocked))
            for s in [s for s in self._packets if seq_diff(s, next_seq) < 0]:
                del self._packets[s]
        else:
            self._resync(now)

    def _follows_frame_end(self, seq: int) -> bool:
        previous = self._packets.get(seq_add(seq, -1))
        return previous is not None and previous.marker == 1

    def _resync(self, now: float) -> None:
        """Nothing usable is pending: start over at the next keyframe."""
        self._packets.clear()
        self._next_seq = None
        self._blocked_since = None
        if not self._need_keyframe:
            self._need_keyframe = True
            self.keyframe_requests += 1
            self._on_keyframe_needed()
