"""Taps: how recording and frame processors see a published track.

The forwarding path hands each packet to a tap synchronously and must never
wait for it, so a tap does O(1) work per packet on the event loop and pushes
anything slow (writing, decoding, analysis) behind a bounded queue that drops
the oldest item when its consumer falls behind. A tap that raises is detached
and reported; the call goes on.

- EncodedFrameTap: whole encoded frames as received (bounded reassembly, no
  decoding), for the recorder.
- DecodedFrameTap: the track decoded once in a worker thread, delivered as
  numpy images at a chosen rate and size to any number of consumers, for
  processors such as face analysis; and every decoded frame as it is (with its
  RTP timestamp) to frame consumers, for live watermark variants.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Optional, Protocol, cast

import numpy as np
from aiortc.codecs import depayload, get_decoder
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av import VideoFrame

from .bounded_queue import DropOldestQueue
from .frame_assembler import EncodedFrame, FrameAssembler

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05  # how often a stalled assembly is re-examined


class PacketTap(Protocol):
    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class TappedFrame:
    """An encoded frame with the codec it is in and when it was complete."""

    codec: RTCRtpCodecParameters
    frame: EncodedFrame


class EncodedFrameTap:
    """Reassembles frames (bounded wait) and hands them to an async consumer in order."""

    def __init__(self, consumer: Callable[[TappedFrame], Awaitable[None]], *, request_keyframe: Callable[[], None],
                 max_wait_s: float = 0.3, queue_size: int = 64, name: str = "tap") -> None:
        self.name = name
        self._consumer = consumer
        self._request_keyframe = request_keyframe
        self._max_wait_s = max_wait_s
        self._assembler: Optional[FrameAssembler] = None
        self._codec: Optional[RTCRtpCodecParameters] = None
        self._queue: DropOldestQueue = DropOldestQueue(queue_size)
        self._task = asyncio.ensure_future(self._deliver())
        self._poller: Optional[asyncio.TimerHandle] = None
        self.failed: Optional[BaseException] = None
        self.closed = False

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None:
        if self.closed:
            return
        if codec.mimeType.lower().startswith("audio/"):
            # one packet is one frame and every frame decodes alone: nothing to assemble
            self._codec = codec
            self._enqueue([EncodedFrame(packet.timestamp, True, [packet.payload], packet.sequence_number,
                                        packet.sequence_number, arrived_at)])
            return
        if self._codec is None or codec.payloadType != self._codec.payloadType:
            self._codec = codec  # a codec change restarts assembly at the next keyframe
            self._assembler = FrameAssembler(codec.name, max_wait_s=self._max_wait_s,
                                             on_keyframe_needed=self._request_keyframe)
            self._request_keyframe()
        assembler = self._assembler
        assert assembler is not None  # made with self._codec above (a tap sees one kind of track)
        frames = assembler.add(packet.sequence_number, packet.timestamp, packet.marker,
                               packet.payload, arrived_at)
        self._enqueue(frames)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().call_later(POLL_INTERVAL_S, self._poll)

    def _poll(self) -> None:
        self._poller = None
        if self._assembler is not None and not self.closed:
            self._enqueue(self._assembler.poll(time.monotonic()))

    def _enqueue(self, frames: list[EncodedFrame]) -> None:
        codec = self._codec
        assert codec is not None  # set by the packet that started assembly, before any frame
        for frame in frames:
            self._queue.put_nowait(TappedFrame(codec, frame))

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    @property
    def assembler(self) -> Optional[FrameAssembler]:
        return self._assembler

    async def _deliver(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            try:
                await self._consumer(item)
            except Exception as exc:  # a broken consumer loses its tap, never the call
                logger.exception("%s consumer failed; tap detached", self.name)
                self.failed = exc
                self.close()
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._poller is not None:
            self._poller.cancel()
        self._queue.put_nowait(None)


FrameConsumer = Callable[[np.ndarray, float], None]
# Every decoded frame, unconverted, with the RTP timestamp of the frame it came from.
RawFrameConsumer = Callable[[VideoFrame, int], None]


class DecodedFrameTap:
    """Decodes a video track once, in a worker thread; consumers get BGR images at `fps`.

    Every frame must be decoded (each depends on the previous one), but only
    `fps` of them per second are converted and handed on. Consumers run in the
    worker thread: they must be quick or hand off again (processors run their own
    workers). The input queue keeps the newest frames; if decoding falls behind,
    old frames are dropped and the decoder resynchronises at a keyframe.
    """

    def __init__(self, *, request_keyframe: Callable[[], None], fps: float = 10.0,
                 size: Optional[tuple[int, int]] = None, name: str = "decoder") -> None:
        self.name = name
        self._fps = fps
        self._size = size
        self._consumers: list[FrameConsumer] = []
        self._raw_consumers: list[RawFrameConsumer] = []
        self._lock = threading.Lock()
        self._encoded = EncodedFrameTap(self._to_worker, request_keyframe=request_keyframe, name=name)
        self._inbox: "queue.Queue[Optional[TappedFrame]]" = queue.Queue(maxsize=8)
        self._request_keyframe = request_keyframe
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name=f"{name}-worker", daemon=True)
        self._thread.start()
        self._needs_keyframe = False  # set by either thread; read by the worker
        self.frames_decoded = 0
        self.frames_delivered = 0
        self.decode_errors = 0
        self.frames_skipped = 0

    def add_consumer(self, consumer: FrameConsumer) -> None:
        with self._lock:
            self._consumers.append(consumer)

    def remove_consumer(self, consumer: FrameConsumer) -> None:
        with self._lock:
            if consumer in self._consumers:
                self._consumers.remove(consumer)

    def add_frame_consumer(self, consumer: RawFrameConsumer) -> None:
        """Every decoded frame (no rate limit, no conversion): must return quickly (hand off)."""
        with self._lock:
            self._raw_consumers.append(consumer)

    def remove_frame_consumer(self, consumer: RawFrameConsumer) -> None:
        with self._lock:
            if consumer in self._raw_consumers:
                self._raw_consumers.remove(consumer)

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None:
        self._encoded.on_packet(packet, codec, arrived_at)

    async def _to_worker(self, item: TappedFrame) -> None:
        try:
            self._inbox.put_nowait(item)
        except queue.Full:
            # The decoder is behind: drop, and the chain is broken until a keyframe.
            self.frames_skipped += 1
            self._needs_keyframe = True
            self._request_keyframe()

    def _work(self) -> None:
        decoder: Optional[Decoder] = None
        codec_name = None
        next_output = 0.0
        while True:
            item = self._inbox.get()
            if item is None:
                return
            if self._needs_keyframe:
                if not item.frame.keyframe:
                    continue
                self._needs_keyframe = False
            if decoder is None or item.codec.name != codec_name:
                decoder, codec_name = get_decoder(item.codec), item.codec.name
            data = b"".join(depayload(item.codec, p) for p in item.frame.payloads)
            try:
                encoded = JitterFrame(data=data, timestamp=item.frame.rtp_timestamp)
                # a video track: aiortc's video decoders give VideoFrames (typed as av's base Frame)
                images = cast(list[VideoFrame], decoder.decode(encoded))
            except Exception:
                self.decode_errors += 1
                self._needs_keyframe = True
                self._loop.call_soon_threadsafe(self._request_keyframe)
                continue
            self.frames_decoded += len(images)
            with self._lock:
                raw_consumers = list(self._raw_consumers)
                consumers = list(self._consumers)
            if images and raw_consumers:
                self._deliver_raw(raw_consumers, images[-1], item.frame.rtp_timestamp)
            now = time.monotonic()
            if not images or now < next_output or not consumers:
                continue
            next_output = now + 1.0 / self._fps
            image = images[-1]
            if self._size is not None:
                image = image.reformat(width=self._size[0], height=self._size[1])
            array = image.to_ndarray(format="bgr24")
            for consumer in consumers:
                try:
                    consumer(array, now)
                except Exception:
                    logger.exception("%s: a frame consumer failed and was removed", self.name)
                    self.remove_consumer(consumer)
            self.frames_delivered += 1

    def _deliver_raw(self, consumers: list[RawFrameConsumer], frame: VideoFrame, rtp_timestamp: int) -> None:
        for consumer in consumers:
            try:
                consumer(frame, rtp_timestamp)
            except Exception:
                logger.exception("%s: a frame consumer failed and was removed", self.name)
                self.remove_frame_consumer(consumer)

    def close(self) -> None:
        self._encoded.close()
        try:
            self._inbox.put_nowait(None)
        except queue.Full:
            while True:  # make room for the stop marker
                try:
                    self._inbox.get_nowait()
                except queue.Empty:
                    break
            self._inbox.put_nowait(None)
