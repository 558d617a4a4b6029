"""A publisher that replays a pre-encoded clip, logs when each clip frame was sent, and honours PLI.

Like loadtest.preencoded.PreEncodedTrack, recv() returns av.Packet objects paced
in real time, which aiortc's RTCRtpSender packetizes without encoding. On top:

- `sends`: (clip index, monotonic time) of every frame handed to the sender,
  the "capture stamp" receivers' latencies are measured from. A clip frame is
  sent once per loop of the clip (its keyframe variant counts as that frame),
  so a (clip index, receive time) pair names one send as long as latency stays
  below the clip's length (metrics.REUSE_HORIZON_S is the bound trusted);
- keyframe requests: a browser answers PLI/FIR with a keyframe. aiortc's sender
  ignores PLI for pre-encoded packets, so install_keyframe_hook() passes it to
  the track, which sends the keyframe variant of its next frame (clips.py)
  when `keyframes` were given, and then carries on with the regular clip.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from loadtest.preencoded import EncodedClip


class StampedClipTrack(MediaStreamTrack):
    def __init__(self, clip: EncodedClip, start_index: int = 0, keyframes: Optional[EncodedClip] = None) -> None:
        super().__init__()
        self.kind = clip.kind
        self._clip = clip
        self._keyframes = keyframes
        n = len(clip.packets)
        if keyframes is not None and len(keyframes.packets) != n:
            raise ValueError("keyframe variants must match the clip frame for frame")
        index = start_index % n
        while index > 0 and not clip.keyframes[index]:
            index -= 1  # start decodable
        self._index = index
        self._step = clip.duration // n  # pts units per packet: one video frame or one 20 ms Opus packet
        self._position = 0  # packets sent: the timeline
        self._start: Optional[float] = None
        self._keyframe_wanted = False
        self.sends: list[tuple[int, float]] = []
        self.keyframe_requests = 0
        self.keyframes_on_request = 0
        self.max_late_s = 0.0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._keyframe_wanted = self._keyframes is not None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        clip = self._clip
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = self._position * self._step
        due = self._start + float(pts * clip.time_base)
        if due > now:
            await asyncio.sleep(due - now)
            now = time.monotonic()
        else:
            self.max_late_s = max(self.max_late_s, now - due)
        index = self._index
        data = clip.packets[index]
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            if not clip.keyframes[index]:
                data = self._keyframes.packets[index]
                self.keyframes_on_request += 1
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = clip.time_base
        self.sends.append((index, now))
        self._index = (index + 1) % len(clip.packets)
        self._position += 1
        return packet

    def counters(self) -> dict:
        return {"sent": len(self.sends), "keyframe_requests": self.keyframe_requests,
                "keyframes_on_request": self.keyframes_on_request, "max_late_ms": round(self.max_late_s * 1000, 1)}


def install_keyframe_hook() -> None:
    """In this process, aiortc senders pass PLI/FIR on to tracks that can act on them."""
    from aiortc.rtcrtpsender import RTCRtpSender

    if getattr(RTCRtpSender._send_keyframe, "_loadtest_hook", False):
        return
    original = RTCRtpSender._send_keyframe

    def _send_keyframe(self: RTCRtpSender) -> None:
        original(self)
        track = self.track
        if track is not None and hasattr(track, "request_keyframe"):
            track.request_keyframe()

    _send_keyframe._loadtest_hook = True
    RTCRtpSender._send_keyframe = _send_keyframe
