"""One viewer's watermarked copy of one published video track: a down-track source.

Forwarding hands a subscriber the publisher's own packets. A room with the live
watermark on the server gives some viewers a copy of a track with *their* marks in
the picture (visible label + invisible forensic id, watermark/embed.py),
which means decoding, marking and encoding. This class is that copy; on the packet path
(media/packet_path.py) it is a `DownTrackSource` like a PublishedTrack (add_downtrack /
remove_downtrack / request_keyframe / sender_report), so everything downstream is
unchanged: per-subscriber rewriting, the NACK cache and RTX, PLI/FIR (-> a keyframe from
*this* encoder, never a PLI upstream), sender reports. Its down-tracks are `PacketSink`s,
connected to it by the room (`packet_path.connect`, the watermark host's `source_for`
having chosen it) and disconnected when it stops.

Pipeline and where each step runs:

    decoder thread (DecodedFrameTap, shared per track)  -- offer(frame, rtp ts): O(1)
        -> a one-frame slot (the newest frame; an older one still waiting is dropped)
    this variant's worker thread: copy to I420, mark, encode, packetize
        -> loop.call_soon_threadsafe -> a sender task on the event loop: RTP packets
           to the down-track(s), in order

If marking + encoding take longer than the frame interval, frames are dropped at the
slot: the viewer gets a lower frame rate, never a growing delay, and nothing upstream
(forwarding to other viewers, the shared decoder) waits for this worker.

Timestamps: each output frame carries the RTP timestamp of the publisher's frame it
was made from, so the publisher's sender reports (NTP <-> RTP) still hold and the
viewer's lip sync with the forwarded audio is kept. Sequence numbers are our own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

import numpy as np
from aiortc.rtp import RtpPacket
from av import VideoFrame

from .packet_path import PacketSink, disconnect
from .rate_meter import RateMeter
from .rtp_clock import SenderReport, abs_send_time_now
from .seqnum import seq_add
from .variant_encoder import EncodedVariantFrame, VariantEncoder

if TYPE_CHECKING:
    from .published_track import PublishedTrack

logger = logging.getLogger(__name__)

FrameMarker = Callable[[np.ndarray, int], None]  # (I420 array, ms since the variant started): marks in place

KEYFRAME_MIN_INTERVAL_S = 0.3  # PLI/FIR bursts make one keyframe, not one each (as upstream requests do)
START_BITRATE_PER_PIXEL = 1_000_000 / (1280 * 720)  # ~1 Mbit/s at 720p until the viewer's REMB says more
MIN_BITRATE, MAX_BITRATE = 250_000, 2_500_000
MAX_PENDING_FRAMES = 8  # encoded frames waiting for the event loop (never dropped: each is a reference)


class BitrateFollower:
    """The encoder's target from the viewer's REMB, changed rarely: every change costs a keyframe.

    Down at once when the estimate is 20 % below the target (congestion), up only when it
    is 30 % above and the last change is 3 s old; within [MIN_BITRATE, ceiling]. The
    ceiling, 1.5x the start rate (1.5 Mbit/s at 720p, as browsers send), is what a copy of
    an already compressed picture can use: more only costs CPU and bandwidth.
    """

    def __init__(self, start: int, ceiling: int = MAX_BITRATE) -> None:
        self.target = start
        self.ceiling = ceiling
        self._changed_at = 0.0

    def update(self, remb: Optional[int], now: float) -> int:
        if remb is None:
            return self.target
        wanted = int(max(MIN_BITRATE, min(remb * 0.9, self.ceiling)))
        if wanted < self.target * 0.8 or (wanted > self.target * 1.3 and now - self._changed_at >= 3.0):
            self.target, self._changed_at = wanted, now
        return self.target


class WatermarkVariant:
    """See the module docstring. `make_marker()` gives the function that marks an I420 frame in
    place; it is called in the worker (building the pattern takes milliseconds: not on the loop)."""

    kind = "video"

    def __init__(self, track: "PublishedTrack", *, viewer_id: str, make_marker: Callable[[], FrameMarker],
                 max_fps: float = 30.0, on_idle: Callable[["WatermarkVariant"], None] = lambda v: None) -> None:
        self.track = track
        self.participant_id = track.participant_id  # the publisher, as for a PublishedTrack
        self.viewer_id = viewer_id
        self._make_marker = make_marker
        self._marker: Optional[FrameMarker] = None
        self._min_interval_ts = int(90000 / max_fps * 0.9)  # RTP ticks; 10 % slack for jitter
        self._on_idle = on_idle
        self._loop = asyncio.get_running_loop()
        self._downtracks: list[PacketSink] = []
        # what it sends, for the subscribers' downlink control: over a few seconds, as keyframes come in bursts
        self._offered = RateMeter(bucket_s=0.25, buckets=12)
        self._cond = threading.Condition()
        self._slot: Optional[tuple[VideoFrame, int, float]] = None
        self._keyframe_wanted = True  # the first frame out must be one
        self._pending: deque[tuple[EncodedVariantFrame, int, float]] = deque()
        self._sender: Optional[asyncio.Task] = None
        self._seq = random.randrange(1 << 16)
        self._started = time.monotonic()
        self.stopped = False
        # counters for operators, tests and the benchmark
        self.frames_offered = 0
        self.frames_skipped = 0  # dropped at the slot (encoder busy) or by the frame-rate cap
        self.frames_encoded = 0
        self.keyframes = 0
        self.packets_out = 0
        self.failures = 0
        self.latency_s = 0.0  # decoded -> packets handed to the down-track, smoothed
        self.busy_s = 0.0  # wall time the worker spent marking + encoding (its load: busy_s per second ~ cores)
        self._bitrate = BitrateFollower(MIN_BITRATE)  # sized to the picture at the first frame
        self._thread = threading.Thread(target=self._work, name=f"wm-{viewer_id}", daemon=True)
        self._thread.start()

    # --- a source of down-tracks (media/packet_path.py DownTrackSource) --------------------

    def add_downtrack(self, downtrack: PacketSink) -> None:
        if downtrack not in self._downtracks:
            self._downtracks.append(downtrack)
        self.request_keyframe()

    def remove_downtrack(self, downtrack: PacketSink) -> None:
        if downtrack in self._downtracks:
            self._downtracks.remove(downtrack)
        if not self._downtracks and not self.stopped:
            self._on_idle(self)

    @property
    def downtracks(self) -> list[PacketSink]:
        return list(self._downtracks)

    def request_keyframe(self) -> None:
        """From our encoder: the publisher's stream is fine, only this copy needs one."""
        self._keyframe_wanted = True

    def offered_bps(self, now: float) -> float:
        return self._offered.bps(now)

    @property
    def sender_report(self) -> Optional[SenderReport]:
        return self.track.sender_report  # our frames keep the publisher's RTP timestamps

    # --- fed by the decoder thread ---------------------------------------------------------

    def offer(self, frame: VideoFrame, rtp_timestamp: int) -> None:
        with self._cond:
            self.frames_offered += 1
            if self._slot is not None:
                self.frames_skipped += 1  # still busy with the last one: drop the older frame
            self._slot = (frame, rtp_timestamp, time.monotonic())
            self._cond.notify()

    # --- the worker ------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._marker = self._make_marker()
        except Exception:
            logger.exception("%r: the watermark could not be prepared; this copy stays dark", self)
            return
        encoder: Optional[VariantEncoder] = None
        last_ts: Optional[int] = None
        pts = 0
        last_keyframe_at = -KEYFRAME_MIN_INTERVAL_S
        while True:
            with self._cond:
                while self._slot is None and not self.stopped:
                    self._cond.wait()
                if self.stopped:
                    return
                slot, self._slot = self._slot, None
            assert slot is not None  # the wait above ends on a frame, or on stop
            frame, rtp_ts, decoded_at = slot
            if not any(d.started for d in list(self._downtracks)):
                continue  # the viewer's connection is still being negotiated: nothing to send to
            step = None if last_ts is None else (rtp_ts - last_ts) & 0xFFFFFFFF
            if step is not None and step < self._min_interval_ts:
                self.frames_skipped += 1  # over the frame-rate cap (or a repeated/older timestamp)
                continue
            codec = self.track.last_codec
            if codec is None or codec.name not in ("VP8", "H264"):
                continue
            began = time.monotonic()
            try:
                if encoder is None or encoder.codec_name != codec.name:
                    start = START_BITRATE_PER_PIXEL * frame.width * frame.height
                    start = int(max(MIN_BITRATE, min(start, MAX_BITRATE)))
                    self._bitrate = BitrateFollower(start, ceiling=int(min(MAX_BITRATE, 1.5 * start)))
                    encoder = VariantEncoder(codec.name, self._bitrate.target)
                encoder.set_bitrate(self._bitrate.update(self._remb(), time.monotonic()))
                if frame.width % 2 or frame.height % 2:  # I420 needs even sizes
                    frame = frame.reformat(width=frame.width & ~1, height=frame.height & ~1)
                image = frame.to_ndarray(format="yuv420p")  # a copy: the decoder's frame stays untouched
                self._marker(image, int((time.monotonic() - self._started) * 1000))
                pts += 3000 if step is None else max(1, step if step < 1 << 31 else 3000)
                now = time.monotonic()
                keyframe = self._keyframe_wanted and now - last_keyframe_at >= KEYFRAME_MIN_INTERVAL_S
                if keyframe:
                    self._keyframe_wanted = False
                encoded = encoder.encode(VideoFrame.from_ndarray(image, format="yuv420p"), pts, keyframe)
                self.busy_s += time.monotonic() - began
            except Exception:
                self.failures += 1
                if self.failures == 1 or self.failures % 300 == 0:  # not 30 log lines a second
                    logger.exception("%r: marking/encoding a frame failed (%d so far)", self, self.failures)
                encoder = None  # start again from a keyframe
                continue
            last_ts = rtp_ts
            if encoded is None:
                continue
            if encoded.keyframe:
                last_keyframe_at = time.monotonic()
                self.keyframes += 1
            self.frames_encoded += 1
            if self.stopped:
                return
            try:
                self._loop.call_soon_threadsafe(self._queue, encoded, rtp_ts, decoded_at)
            except RuntimeError:  # the event loop is gone (shutdown) while this frame was being made
                return

    def _remb(self) -> Optional[int]:
        rates = [d.remb_bitrate for d in list(self._downtracks) if d.remb_bitrate]
        return min(rates) if rates else None

    # --- the event loop side: packets to the down-track(s) ------------------------------------

    def _queue(self, encoded: EncodedVariantFrame, rtp_ts: int, decoded_at: float) -> None:
        if self.stopped:
            return
        if len(self._pending) >= MAX_PENDING_FRAMES:
            # The loop is starved: restart the picture rather than queue further behind.
            self._pending.clear()
            self.request_keyframe()
            if not encoded.keyframe:
                return
        self._pending.append((encoded, rtp_ts, decoded_at))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_pending())

    async def _send_pending(self) -> None:
        codec = self.track.last_codec
        while self._pending and not self.stopped:
            # the worker encodes only once the track has a codec (never unset); negotiated codecs have a number
            assert codec is not None and codec.payloadType is not None
            encoded, rtp_ts, decoded_at = self._pending.popleft()
            send_time = abs_send_time_now()
            now = time.monotonic()
            last = len(encoded.payloads) - 1
            for i, payload in enumerate(encoded.payloads):
                packet = RtpPacket(payload_type=codec.payloadType, marker=int(i == last),
                                   sequence_number=self._seq, timestamp=rtp_ts, payload=payload)
                self._seq = seq_add(self._seq, 1)
                self._offered.add(len(payload), now)
                for downtrack in list(self._downtracks):
                    try:
                        await downtrack.forward(packet, codec, encoded.keyframe and i == 0, send_time, now)
                    except Exception:  # one broken subscriber must not stop the others
                        logger.exception("sending to %s failed", downtrack)
                self.packets_out += 1
            self.latency_s += 0.1 * ((time.monotonic() - decoded_at) - self.latency_s)

    # --- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ends the worker (it exits after the frame in hand); safe from the event loop."""
        with self._cond:
            if self.stopped:
                return
            self.stopped = True
            self._slot = None
            self._cond.notify()
        self._pending.clear()
        if self._sender is not None:
            self._sender.cancel()
        for downtrack in list(self._downtracks):
            disconnect(downtrack, self)

    def stats(self) -> dict:
        return {"viewer": self.viewer_id, "publisher": self.participant_id, "offered": self.frames_offered,
                "skipped": self.frames_skipped, "encoded": self.frames_encoded, "keyframes": self.keyframes,
                "packets": self.packets_out, "latency_ms": round(self.latency_s * 1000, 1),
                "bitrate": self._bitrate.target}

    def __repr__(self) -> str:
        return f"WatermarkVariant({self.participant_id} -> {self.viewer_id})"
