"""Pre-encoded media for cheap publishers: encode a clip once, replay it forever.

A benchmark of the server must not spend the client machine's CPU on encoding,
so a clip is encoded once (VP8 with PyAV's libvpx, Opus with libopus), kept in
memory and optionally in a cache directory, and replayed by PreEncodedTrack.
Its recv() returns av.Packet objects with pts/time_base paced in real time;
aiortc's RTCRtpSender sends those through the codec's pack() path (packetize
only, no encoding). Consequence: aiortc ignores PLI/FIR for such a track, so a
new subscriber starts at the clip's next periodic keyframe.

The clip loops; every loop starts on a keyframe, so the loop point is decodable.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
import math
import os
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

_MAGIC = b"CSFU-CLIP-1\n"
_RECORD = struct.Struct(">IqB")  # payload length, pts, flags (bit 0: keyframe)


@dataclass(frozen=True)
class VideoClipSpec:
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 1_500_000
    seconds: float = 10.0
    keyframe_interval_s: float = 2.0
    seed: int = 1

    @property
    def frames(self) -> int:
        return max(1, round(self.seconds * self.fps))

    @property
    def keyframe_every(self) -> int:
        return max(1, round(self.keyframe_interval_s * self.fps))


@dataclass(frozen=True)
class AudioClipSpec:
    seconds: float = 10.0
    bitrate: int = 32_000
    frequency: float = 440.0


@dataclass
class EncodedClip:
    """Encoded packets of one clip, in decoding order, with their pts in time_base units."""

    kind: str  # "video" | "audio"
    codec: str  # "vp8" | "opus"
    time_base: fractions.Fraction
    duration: int  # clip length in time_base units (the pts offset of each loop)
    packets: list[bytes]
    pts: list[int]
    keyframes: list[bool]
    meta: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return float(self.duration * self.time_base)

    @property
    def bitrate(self) -> float:
        """Average bits per second of the encoded clip."""
        return sum(len(p) for p in self.packets) * 8 / self.seconds

    # --- cache file: magic, one JSON header line, then length-prefixed records ------

    def dump(self, path: Path) -> None:
        header = {
            "kind": self.kind, "codec": self.codec,
            "time_base": [self.time_base.numerator, self.time_base.denominator],
            "duration": self.duration, "count": len(self.packets), "meta": self.meta,
        }
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(json.dumps(header).encode() + b"\n")
            for data, pts, key in zip(self.packets, self.pts, self.keyframes):
                f.write(_RECORD.pack(len(data), pts, 1 if key else 0))
                f.write(data)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "EncodedClip":
        with open(path, "rb") as f:
            if f.readline() != _MAGIC:
                raise ValueError(f"{path} is not a clip cache file")
            header = json.loads(f.readline())
            packets, pts_list, keyframes = [], [], []
            for _ in range(header["count"]):
                length, pts, flags = _RECORD.unpack(f.read(_RECORD.size))
                data = f.read(length)
                if len(data) != length:
                    raise ValueError(f"{path} is truncated")
                packets.append(data)
                pts_list.append(pts)
                keyframes.append(bool(flags & 1))
        return cls(kind=header["kind"], codec=header["codec"],
                   time_base=fractions.Fraction(*header["time_base"]), duration=header["duration"],
                   packets=packets, pts=pts_list, keyframes=keyframes, meta=header["meta"])


# --- encoding -------------------------------------------------------------------------


def _synthetic_frames(spec: VideoClipSpec):
    """RGB frames with real motion: a scrolling textured background and a moving box."""
    w, h = spec.width, spec.height
    rng = np.random.default_rng(spec.seed)
    margin = 320
    coarse = rng.integers(0, 255, size=((h + margin) // 8 + 1, (w + margin) // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))[: h + margin, : w + margin]
    fine = rng.integers(0, 64, size=texture.shape, dtype=np.uint8)
    texture = (texture // 2 + fine).astype(np.uint8)
    box = max(16, min(w, h) // 4)
    for i in range(spec.frames):
        dx, dy = (i * 3) % margin, (i * 2) % margin
        image = texture[dy:dy + h, dx:dx + w].copy()
        bx = int((w - box) * (0.5 + 0.5 * math.sin(i / 20)))
        by = int((h - box) * (0.5 + 0.5 * math.cos(i / 27)))
        image[by:by + box, bx:bx + box] = (255 * ((i // 15) % 2), 128, 255 - (i * 4) % 255)
        yield image


def encode_video_clip(spec: VideoClipSpec) -> EncodedClip:
    """VP8 at ~spec.bitrate (CBR, realtime settings like aiortc's), a keyframe every spec.keyframe_interval_s."""
    time_base = fractions.Fraction(1, spec.fps)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = spec.width, spec.height
    codec.pix_fmt = "yuv420p"
    codec.time_base = time_base
    codec.framerate = spec.fps
    codec.bit_rate = spec.bitrate
    codec.gop_size = spec.keyframe_every
    codec.thread_count = min(4, os.cpu_count() or 1)
    codec.options = {
        "deadline": "realtime", "cpu-used": "4", "lag-in-frames": "0", "auto-alt-ref": "0",
        "minrate": str(spec.bitrate), "maxrate": str(spec.bitrate), "bufsize": str(spec.bitrate),
        "undershoot-pct": "100", "overshoot-pct": "15", "partitions": "0",
    }
    encoded: list[av.Packet] = []
    for index, image in enumerate(_synthetic_frames(spec)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = index, time_base
        if index % spec.keyframe_every == 0:
            frame.pict_type = av.video.frame.PictureType.I
        encoded.extend(codec.encode(frame))
    encoded.extend(codec.encode(None))
    if not encoded or not encoded[0].is_keyframe:
        raise RuntimeError("the VP8 clip does not start with a keyframe")
    return EncodedClip(
        kind="video", codec="vp8", time_base=time_base, duration=spec.frames,
        packets=[bytes(p) for p in encoded], pts=[int(p.pts) for p in encoded],
        keyframes=[bool(p.is_keyframe) for p in encoded], meta=asdict(spec),
    )


def encode_audio_clip(spec: AudioClipSpec) -> EncodedClip:
    """Opus, 48 kHz mono, 20 ms packets of a quiet tone."""
    sample_rate, frame_size = 48_000, 960
    time_base = fractions.Fraction(1, sample_rate)
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = sample_rate
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = spec.bitrate
    codec.time_base = time_base
    count = max(1, round(spec.seconds * sample_rate / frame_size))
    encoded: list[av.Packet] = []
    for index in range(count):
        t = (np.arange(frame_size) + index * frame_size) / sample_rate
        samples = (np.sin(2 * math.pi * spec.frequency * t) * 3000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, index * frame_size, time_base
        encoded.extend(codec.encode(frame))
    encoded.extend(codec.encode(None))
    packets = [bytes(p) for p in encoded][:count]
    # Opus packets are independent: pts is just the packet index times 20 ms.
    return EncodedClip(
        kind="audio", codec="opus", time_base=time_base, duration=count * frame_size,
        packets=packets, pts=[i * frame_size for i in range(len(packets))],
        keyframes=[True] * len(packets), meta=asdict(spec),
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "consult-sfu" / "clips"


def _cache_path(cache_dir: Path, spec) -> Path:
    key = json.dumps({"type": type(spec).__name__, **asdict(spec), "av": av.__version__}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"{type(spec).__name__}-{digest}.clip"


def load_or_encode(spec, cache_dir: Optional[Path] = None) -> EncodedClip:
    """The clip for this spec, from the cache directory if encoded before (cache_dir None: no cache)."""
    encode = encode_video_clip if isinstance(spec, VideoClipSpec) else encode_audio_clip
    if cache_dir is None:
        return encode(spec)
    path = _cache_path(Path(cache_dir), spec)
    if path.exists():
        try:
            return EncodedClip.load(path)
        except (ValueError, OSError, struct.error, json.JSONDecodeError):
            pass  # re-encode a damaged cache file
    clip = encode(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    clip.dump(path)
    return clip


# --- replay -----------------------------------------------------------------------------


class PreEncodedTrack(MediaStreamTrack):
    """Replays an EncodedClip in real time as av.Packet objects (aiortc packs them, no encoding).

    `start_index` lets several publishers share a clip without sending identical
    frames at the same moment; it is rounded down to a keyframe so each stream
    starts decodable.
    """

    def __init__(self, clip: EncodedClip, start_index: int = 0) -> None:
        super().__init__()
        self.kind = clip.kind
        self._clip = clip
        n = len(clip.packets)
        index = start_index % n
        while index > 0 and not clip.keyframes[index]:
            index -= 1
        self._first = index
        self._sent = 0
        self._start: Optional[float] = None
        self._pts_origin = clip.pts[index]
        self.packets_sent = 0
        self.bytes_sent = 0
        self.late_s = 0.0  # how far behind real time the last packet went out (client overload)
        self.max_late_s = 0.0  # the worst lateness since the last reset_lateness()

    def reset_lateness(self) -> None:
        self.max_late_s = 0.0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        clip = self._clip
        n = len(clip.packets)
        position = self._first + self._sent
        loops, index = divmod(position, n)
        pts = loops * clip.duration + clip.pts[index] - self._pts_origin
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + float(pts * clip.time_base)
        if due > now:
            await asyncio.sleep(due - now)
            self.late_s = 0.0
        else:
            self.late_s = now - due
            self.max_late_s = max(self.max_late_s, self.late_s)
        data = clip.packets[index]
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = clip.time_base
        self._sent += 1
        self.packets_sent += 1
        self.bytes_sent += len(data)
        return packet
