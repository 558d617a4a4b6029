"""Video frames from RTP packets as a decodability-aware receiver sees them.

`ReceiverFrameAssembler` is fed every packet of one video stream as it arrives (after
impairment, in arrival order, retransmissions included). It answers two
questions per frame:

- complete: every packet of the frame is here. A frame's first packet is known
  from its predecessor (previous sequence number has another timestamp or the
  marker bit, or was padding: an FEC packet, which is sent between frames) or,
  when that packet is missing, from the codec's start-of-frame signal in the
  payload (VP8 descriptor S bit with partition 0; H.264 SPS, AUD, SEI or a first
  non-IDR slice). Its last packet carries the marker bit.
- decodable: complete, and either a keyframe or the next frame after the last
  decodable one. Without layer information this is the rule a receiver must
  apply: a VP8/H.264 inter frame may reference any earlier frame since the
  keyframe, so one missing frame makes every later frame undecodable until the
  next keyframe. "Next" is what libwebrtc's reference finder uses: for VP8 with
  a picture ID, the next picture ID (wrapping at 2^7 or 2^15), so a lost FEC
  packet between two frames breaks nothing; without one (H.264), the next
  sequence number, skipping padding received in between (`add_padding`).

A frame is `delayed_by_retransmission` when one of its packets arrived after a
later sequence number had: a receiver that NACKs a gap the moment it sees it
(libwebrtc's NackRequester) had asked for that packet, and libwebrtc keeps such
frames out of its playout-delay estimate (loadtest.playout).

Used by the load-test client both as a measuring observer next to aiortc's own
jitter buffer and as the frame buffer of its browser-like receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Optional

from media.codec_inspect import PictureId, vp8_picture_id, vp8_starts_frame

MAX_TRACKED_PACKETS = 4096
MAX_PENDING_FRAMES = 512



@dataclass(slots=True)
class AssembledFrame:
    first_seq: int  # unwrapped sequence numbers
    last_seq: int
    timestamp: int
    data: bytes
    keyframe: bool
    completed_at: float
    decodable_at: Optional[float] = None
    delayed_by_retransmission: bool = False
    picture_id: Optional[PictureId] = None


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: bool
    starts_frame: bool
    data: bytes
    late: bool  # arrived after a later sequence number: a gap the receiver NACKed
    picture_id: Optional[PictureId] = None


class ReceiverFrameAssembler:
    def __init__(self, is_keyframe: Callable[[bytes], bool]) -> None:
        self._is_keyframe = is_keyframe
        self._packets: dict[int, _Packet] = {}
        self._padding: set[int] = set()  # sequence numbers received without media (FEC packets)
        self._highest: Optional[int] = None
        self._complete: dict[int, AssembledFrame] = {}  # first_seq -> frame, not yet decodable
        self._done_firsts: set[int] = set()  # first_seq of frames already completed
        self.last_decodable: Optional[AssembledFrame] = None
        self._decodable_timestamps: dict[int, None] = {}  # insertion-ordered, bounded
        self.frames_completed = 0
        self.frames_decodable = 0
        self.frames_skipped = 0  # complete but never decodable (dropped at a newer keyframe)

    # --- sequence numbers ---------------------------------------------------------------

    def _unwrap(self, seq: int) -> int:
        highest = self._highest
        if highest is None:
            return seq + (1 << 16)  # room below for reordered packets
        base = highest & ~0xFFFF
        candidates = (base - 0x10000 + seq, base + seq, base + 0x10000 + seq)
        return min(candidates, key=lambda c: abs(c - highest))

    # --- feeding ----------------------------------------------------------------------------

    def add(self, seq: int, timestamp: int, marker: bool, data: bytes, now: float,
            starts_frame: bool = False, picture_id: Optional[PictureId] = None) -> list[AssembledFrame]:
        """Record one packet; returns the frames that became decodable, oldest first."""
        s = self._unwrap(seq)
        if self._known(s):
            return []  # duplicate, or a late copy of something already used
        late = self._highest is not None and s < self._highest
        self._packets[s] = _Packet(timestamp, marker, starts_frame, data, late, picture_id)
        if self._highest is None or s > self._highest:
            self._highest = s
        frame = self._try_complete(s, now)
        nxt = self._packets.get(s + 1)
        if nxt is not None and nxt.timestamp != timestamp:
            # this packet may have been the missing predecessor that tells where the next frame starts
            frame = self._try_complete(s + 1, now) or frame
        ready = self._settle(now) if frame is not None else []
        self._prune(bool(ready))
        return ready

    def add_padding(self, seq: int, now: float) -> list[AssembledFrame]:
        """A sequence number received without media (libwebrtc's NotifyReceiverOfEmptyPacket: an FEC
        packet, which goes right after a frame's last packet). Returns frames that became decodable."""
        s = self._unwrap(seq)
        if self._known(s) or s in self._padding:
            return []
        self._padding.add(s)
        if self._highest is None or s > self._highest:
            self._highest = s
        self._try_complete(s + 1, now)  # it tells where the next frame starts
        ready = self._settle(now)  # and may close a sequence-number gap after the last decodable frame
        self._prune(bool(ready))
        return ready

    def _known(self, s: int) -> bool:
        return s in self._packets or (self.last_decodable is not None and s <= self.last_decodable.last_seq)

    def _frame_start(self, s: int) -> Optional[int]:
        ts = self._packets[s].timestamp
        while True:
            prev = self._packets.get(s - 1)
            if prev is None:
                # padding goes between frames; else the predecessor is missing, and only the payload
                # can say this packet starts the frame
                return s if (s - 1) in self._padding or self._packets[s].starts_frame else None
            if prev.timestamp != ts or prev.marker:
                return s
            s -= 1

    def _frame_end(self, s: int) -> Optional[int]:
        ts = self._packets[s].timestamp
        while not self._packets[s].marker:
            nxt = self._packets.get(s + 1)
            if nxt is None:
                return None
            if nxt.timestamp != ts:
                return s  # marker bit missing from the stream: the timestamp change ends the frame
            s += 1
        return s

    def _try_complete(self, s: int, now: float) -> Optional[AssembledFrame]:
        if s not in self._packets:
            return None
        first = self._frame_start(s)
        if first is None or first in self._done_firsts:
            return None
        last = self._frame_end(s)
        if last is None:
            return None
        packets = [self._packets[i] for i in range(first, last + 1)]
        data = b"".join(p.data for p in packets)
        frame = AssembledFrame(first, last, packets[0].timestamp, data, self._is_keyframe(data), now,
                               delayed_by_retransmission=any(p.late for p in packets),
                               picture_id=packets[0].picture_id)
        self._done_firsts.add(first)
        self._complete[first] = frame
        self.frames_completed += 1
        self.on_complete(frame)
        return frame

    def on_complete(self, frame: AssembledFrame) -> None:
        """Hook: called once per frame when its last missing packet arrives."""

    def _settle(self, now: float) -> list[AssembledFrame]:
        ready: list[AssembledFrame] = []
        last = self.last_decodable
        # the newest complete keyframe after the last decodable frame restarts the chain
        keys = [f for f in self._complete.values() if f.keyframe and (last is None or f.first_seq > last.last_seq)]
        if keys and (last is None or self._next_complete(last) is None):
            key = max(keys, key=lambda f: f.first_seq)
            for first in [k for k in self._complete if k < key.first_seq]:
                del self._complete[first]
                self.frames_skipped += 1
            last = self._mark(key, now, ready)
        while last is not None:
            nxt = self._next_complete(last)
            if nxt is None:
                break
            last = self._mark(nxt, now, ready)
        return ready

    def _next_complete(self, last: AssembledFrame) -> Optional[AssembledFrame]:
        """The complete frame that continues the chain after `last`, if any."""
        if last.picture_id is None:
            return self._complete.get(self._after(last.last_seq))
        following = [f for f in self._complete.values() if f.first_seq > last.last_seq and self._follows(f, last)]
        return min(following, key=lambda f: f.first_seq, default=None)

    def _follows(self, frame: AssembledFrame, last: AssembledFrame) -> bool:
        if frame.picture_id is None:  # no picture ID to go by: sequence numbers
            return frame.first_seq == self._after(last.last_seq)
        picture_id, modulus = frame.picture_id
        assert last.picture_id is not None  # _next_complete goes by sequence numbers after a frame without one
        return picture_id == (last.picture_id[0] + 1) % modulus

    def _after(self, s: int) -> int:
        """The first sequence number after `s` that is not padding."""
        s += 1
        while s in self._padding:
            s += 1
        return s

    def _mark(self, frame: AssembledFrame, now: float, ready: list[AssembledFrame]) -> AssembledFrame:
        del self._complete[frame.first_seq]
        frame.decodable_at = now
        self.last_decodable = frame
        self._decodable_timestamps[frame.timestamp] = None
        if len(self._decodable_timestamps) > MAX_PENDING_FRAMES:
            del self._decodable_timestamps[next(iter(self._decodable_timestamps))]
        self.frames_decodable += 1
        ready.append(frame)
        return frame

    def _prune(self, released: bool) -> None:
        if released:  # complete frames behind the newest decodable one will never be decoded
            assert self.last_decodable is not None  # _mark sets it for every released frame
            floor = self.last_decodable.last_seq
            for first in [k for k in self._complete if k <= floor]:
                del self._complete[first]
                self.frames_skipped += 1
            self._padding = {k for k in self._padding if k > floor}
        if len(self._packets) > MAX_TRACKED_PACKETS:
            cut = sorted(self._packets)[len(self._packets) - MAX_TRACKED_PACKETS // 2]
            for s in [k for k in self._packets if k < cut]:
                del self._packets[s]
            self._done_firsts = {k for k in self._done_firsts if k >= cut}
            self._padding = {k for k in self._padding if k >= cut}
        if len(self._complete) > MAX_PENDING_FRAMES:
            for first in sorted(self._complete)[: len(self._complete) - MAX_PENDING_FRAMES]:
                del self._complete[first]
                self.frames_skipped += 1

    @property
    def waiting(self) -> bool:
        """A newer complete frame exists that cannot be decoded yet (the chain is broken)."""
        return bool(self._complete)

    def decodable_timestamp(self, timestamp: int) -> bool:
        """Was a recent frame with this RTP timestamp declared decodable?"""
        return timestamp in self._decodable_timestamps


# --- codec details -----------------------------------------------------------------------------


def vp8_is_keyframe(frame: bytes) -> bool:
    # frame tag: bit 0 of the first byte is 0 for a keyframe, followed by the start code 9d 01 2a
    return len(frame) >= 6 and not frame[0] & 1 and frame[3:6] == b"\x9d\x01\x2a"


def h264_nal_types(annexb: bytes) -> list[int]:
    types: list[int] = []
    i = 0
    while True:
        i = annexb.find(b"\x00\x00\x01", i)
        if i < 0 or i + 3 >= len(annexb):
            return types
        types.append(annexb[i + 3] & 0x1F)
        i += 3


def h264_is_keyframe(frame: bytes) -> bool:
    return 5 in h264_nal_types(frame)


def _h264_nal_starts_frame(nal_type: int, after_header: int) -> bool:
    if nal_type in (6, 7, 9):  # SEI, SPS, access unit delimiter come first in an access unit
        return True
    if nal_type == 1:  # a non-IDR slice with first_mb_in_slice == 0 (ue(v) of 0 is the single bit 1)
        return bool(after_header & 0x80)
    # PPS follows an SPS, and encoders put SPS/PPS before every IDR slice: neither starts a frame
    return False


def h264_starts_frame(payload: bytes) -> bool:
    if len(payload) < 3:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A: look at the first aggregated NAL unit
        return len(payload) >= 5 and _h264_nal_starts_frame(payload[3] & 0x1F, payload[4])
    if nal_type == 28:  # FU-A: only the start fragment can start a frame
        return bool(payload[1] & 0x80) and _h264_nal_starts_frame(payload[1] & 0x1F, payload[2])
    return _h264_nal_starts_frame(nal_type, payload[1])


def no_picture_id(payload: bytes) -> None:
    return None


class CodecHelpers(NamedTuple):
    is_keyframe: Callable[[bytes], bool]  # of a whole frame
    starts_frame: Callable[[bytes], bool]  # of one packet's payload
    picture_id: Callable[[bytes], Optional[PictureId]]  # of one packet's payload


CODEC_HELPERS: dict[str, CodecHelpers] = {
    "vp8": CodecHelpers(vp8_is_keyframe, vp8_starts_frame, vp8_picture_id),
    "h264": CodecHelpers(h264_is_keyframe, h264_starts_frame, no_picture_id),
}
