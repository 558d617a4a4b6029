"""A real-time video encoder for streams the server makes itself (live watermark variants).

PyAV (libvpx / libx264) configured for live video, packetized into RTP payloads with
aiortc's own VP8 and H.264 packetizers (the same code its RTCRtpSender uses, pinned
with aiortc). Why not aiortc's Vp8Encoder: it runs libvpx at speed 6 with the temporal
denoiser on and as many threads as cores. Measured on a 720p30 face clip at 1 Mbit/s
(one thread, docs/BENCHMARKS.md watermark section): aiortc's settings 16.7 % of a core
at 38.9 dB luma PSNR; libvpx's automatic speed (positive cpu-used) 22-24 %, because it
spends whatever part of the frame interval it is allowed; fixed speed 8 without the
denoiser, used here, 12.8 % at 40.4 dB. H.264: x264 "superfast" 10.2 % at 38.0 dB
("veryfast" 17.4 % at 38.2 dB). One thread per viewer: parallel across viewers.

A bitrate change re-creates the encoder (libvpx/x264 via PyAV cannot retarget an
open encoder), which costs a keyframe: callers change it rarely (see
watermark_variant.BitrateFollower).
"""

from __future__ import annotations

import fractions
import random
from dataclasses import dataclass
from typing import Optional

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from av.video.frame import PictureType

TIME_BASE = fractions.Fraction(1, 90000)  # RTP video clock: frames carry their RTP timestamps as pts
GOP_FRAMES = 3000  # keyframes only on request (a new viewer, PLI/FIR, a bitrate change)
VP8_SPEED = "-8"  # negative: a fixed speed (a positive value lets libvpx slow down to fill its time budget)
X264_PRESET = "superfast"


@dataclass(slots=True)
class EncodedVariantFrame:
    payloads: list[bytes]  # RTP payloads, in order; the last one ends the frame
    keyframe: bool


class VariantEncoder:
    """Encodes I420 frames to RTP payloads in one codec ("VP8" or "H264"). Not thread-safe: one per worker."""

    def __init__(self, codec_name: str, bitrate: int, fps: int = 30) -> None:
        if codec_name not in ("VP8", "H264"):
            raise ValueError(f"cannot encode {codec_name}")
        self.codec_name = codec_name
        self.bitrate = bitrate
        self._fps = fps
        self._context: Optional[av.video.codeccontext.VideoCodecContext] = None
        self._picture_id = random.randrange(1 << 15)
        self.restarts = 0

    def set_bitrate(self, bitrate: int) -> None:
        """Takes effect at the next frame (with a keyframe)."""
        if bitrate != self.bitrate:
            self.bitrate = bitrate
            self._context = None

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> Optional[EncodedVariantFrame]:
        """`pts` in 1/90000 s, strictly increasing. None when the encoder produced nothing."""
        context = self._context
        if context is None or context.width != frame.width or context.height != frame.height:
            context = self._context = self._open(frame.width, frame.height)
            self.restarts += 1
            keyframe = True
        frame.pts, frame.time_base = pts, TIME_BASE
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        packets = context.encode(frame)
        if not packets:
            return None
        data = b"".join(bytes(p) for p in packets)
        is_key = any(p.is_keyframe for p in packets)
        if self.codec_name == "VP8":
            payloads = Vp8Encoder._packetize(data, self._picture_id)
            self._picture_id = (self._picture_id + 1) % (1 << 15)
        else:
            payloads = H264Encoder._packetize(H264Encoder._split_bitstream(data))
        return EncodedVariantFrame(payloads, is_key)

    def _open(self, width: int, height: int) -> av.video.codeccontext.VideoCodecContext:
        rate = str(self.bitrate)
        if self.codec_name == "VP8":
            context = av.CodecContext.create("libvpx", "w")
            context.options = {
                "deadline": "realtime", "cpu-used": VP8_SPEED, "lag-in-frames": "0", "auto-alt-ref": "0",
                "noise-sensitivity": "0", "static-thresh": "1", "partitions": "0",
                # CBR with a 1 s buffer, as WebRTC senders do
                "minrate": rate, "maxrate": rate, "bufsize": rate, "undershoot-pct": "100", "overshoot-pct": "15",
            }
            context.qmin, context.qmax = 2, 56
        else:
            context = av.CodecContext.create("libx264", "w")
            context.options = {
                "preset": X264_PRESET, "tune": "zerolatency", "forced-idr": "1",
                "level": "31" if width * height <= 1280 * 720 else "40",
                "maxrate": rate, "bufsize": rate,
            }
            context.profile = "Baseline"
        context.width, context.height, context.pix_fmt = width, height, "yuv420p"
        context.bit_rate = self.bitrate
        context.time_base = TIME_BASE
        context.framerate = fractions.Fraction(self._fps, 1)
        context.gop_size = GOP_FRAMES
        context.thread_count = 1  # one worker per viewer: parallel across viewers, not within one
        return context
