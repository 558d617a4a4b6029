"""Pre-encoded media for cheap publishers: encode a clip once, replay it forever.

A benchmark of the server must not spend the client machine's CPU on encoding,
so a clip is encoded once (loadtest.clips: VP8 or H.264, Opus), kept in memory
and in a cache directory as an EncodedClip, and replayed by PreEncodedTrack.
Its recv() returns av.Packet objects with pts/time_base paced in real time;
aiortc's RTCRtpSender sends those through the codec's pack() path (packetize
only, no encoding). Consequence: aiortc ignores PLI/FIR for such a track, so a
new subscriber starts at the clip's next periodic keyframe.

The clip loops; every loop starts on a keyframe, so the loop point is decodable.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

_MAGIC = b"CSFU-CLIP-1\n"
_RECORD = struct.Struct(">IqB")  # payload length, pts, flags (bit 0: keyframe)


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


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "consult-sfu" / "clips"


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
