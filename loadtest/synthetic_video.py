"""Synthetic pictures and clips for tests and benchmarks, and real encoded files of them.

Everything is made from matplotlib's sample data (Grace Hopper's portrait, the
Jacksboro fault elevation model), so nothing is downloaded and every clip is the
same on every machine:

    photo            the portrait itself (BGR)
    portrait_frames  the portrait on a canvas, drifting and tilting: a face for the tracker
    moving_photo     the photograph covering the frame, drifting and zooming, sensor noise
    clean_clip       unmarked clips of several kinds (CLEAN_KINDS), for false-positive checks
    encode / decode  a real VP8/WebM or H.264/MP4 file in memory, and its frames back
    bitrate_of       such a file's bit rate
"""

from __future__ import annotations

import fractions
import io
import math
from collections.abc import Iterable, Iterator
from typing import Optional

import av
import cv2
import matplotlib.cbook
import numpy as np

PORTRAIT_FRAME_INTERVAL_MS = 66  # timestamps as at 15 fps; tracking only cares that they increase
_PORTRAIT_CYCLE = 60  # distinct frames, replayed; the motion is periodic so the loop is seamless


def photo() -> np.ndarray:
    path = str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    image = cv2.imread(path)
    if image is None:
        raise FileNotFoundError(f"cannot read the photograph {path}")
    return image


def portrait_frames(width: int = 640, height: int = 480, count: int = _PORTRAIT_CYCLE) -> list[np.ndarray]:
    """`count` BGR frames of the portrait moving smoothly (±5% of the width, ±4 degrees)."""
    face = photo()
    scale = height / face.shape[0]
    face = cv2.resize(face, (round(face.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
        phase = 2 * np.pi * i / count
        m = cv2.getRotationMatrix2D((face.shape[1] / 2, height / 2), 4 * np.sin(phase), 1.0)
        m[0, 2] += (width - face.shape[1]) / 2 + 0.05 * width * np.sin(phase)
        frames.append(cv2.warpAffine(face, m, (width, height), borderMode=cv2.BORDER_REPLICATE))
    return frames


def moving_photo(width: int, height: int, n: int, *, seed: int = 0, fps: float = 15.0,
                 image: Optional[np.ndarray] = None) -> Iterator[np.ndarray]:
    """n BGR frames: the photograph covering the frame, drifting (~6 % of the width) and zooming
    (x1.0 -> x1.12) slowly, as a patient moving in front of a camera; sensor noise sigma 1.5.
    `seed` varies the path (and picks a mirrored/rotated photo for odd seeds) so clips differ."""
    src = photo() if image is None else image
    if seed % 2:
        src = cv2.flip(src, 1)
    rng = np.random.default_rng(seed)
    base = max(width / src.shape[1], height / src.shape[0]) * 1.15
    cx, cy = src.shape[1] / 2, src.shape[0] * (0.42 + 0.1 * rng.random())
    ph = rng.random(3) * 2 * math.pi
    for i in range(n):
        t = i / fps
        zoom = base * (1.0 + 0.12 * (0.5 - 0.5 * math.cos(2 * math.pi * t / 20 + ph[0])))
        dx = 0.03 * width * math.sin(2 * math.pi * t / 13 + ph[1])
        dy = 0.02 * height * math.sin(2 * math.pi * t / 9 + ph[2])
        angle = 2.0 * math.sin(2 * math.pi * t / 17 + ph[0])
        m = cv2.getRotationMatrix2D((cx, cy), angle, zoom)
        m[0, 2] += width / 2 - cx + dx
        m[1, 2] += height / 2 - cy + dy
        frame = cv2.warpAffine(src, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        noise = rng.normal(0, 1.5, frame.shape[:2]).astype(np.float32)
        yield np.clip(frame + noise[:, :, None], 0, 255).astype(np.uint8)


def _terrain() -> np.ndarray:
    """matplotlib's Jacksboro fault elevation model, hill-shaded: natural texture that is not a face."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LightSource
    dem = np.load(matplotlib.cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False))["elevation"]
    rgb = LightSource(azdeg=315, altdeg=45).shade(dem, cmap=plt.get_cmap("gist_earth"), blend_mode="overlay")
    return cv2.cvtColor((rgb[:, :, :3] * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _tiled(period: int) -> np.ndarray:
    """A patch of the photograph repeated with exactly the watermark's nominal period
    (the worst case for a periodic-tile detector: strong periodicity where it looks)."""
    patch = cv2.resize(photo()[200:328, 190:318], (period, period), interpolation=cv2.INTER_AREA)
    return np.tile(patch, (12, 16, 1))


def clean_clip(kind: str, width: int, height: int, n: int, seed: int, fps: float) -> Iterator[np.ndarray]:
    """Unmarked clips of several kinds, for the false-positive measurement."""
    if kind == "photo":
        return moving_photo(width, height, n, seed=seed, fps=fps)
    if kind == "terrain":
        return moving_photo(width, height, n, seed=seed, fps=fps, image=_terrain())
    if kind == "periodic":
        return moving_photo(width, height, n, seed=seed, fps=fps, image=_tiled(round(64 * min(width, height) / 360)))
    if kind == "still":
        frame = next(moving_photo(width, height, 1, seed=seed, fps=fps))
        return iter([frame] * n)
    if kind == "smooth":   # a close-up of skin: little texture, large soft gradients
        return (cv2.GaussianBlur(f, (0, 0), 6) for f in moving_photo(width, height, n, seed=seed, fps=fps))
    raise ValueError(kind)


CLEAN_KINDS = ("photo", "terrain", "periodic", "still", "smooth")


# -- clips as files ---------------------------------------------------------------------------------------

def encode(frames: Iterable[np.ndarray], codec: str, bitrate: int, fps: float, *, fast: bool = True) -> bytes:
    """A real file in memory: VP8 in WebM (libvpx) or H.264 in MP4 (libx264), at `bitrate` bit/s.
    fast: the encoders' quick settings (libvpx realtime cpu-used 8, x264 veryfast: less quality for
    the bits); otherwise a careful leaker's (libvpx good-quality mode at cpu-used 4, x264 medium,
    ffmpeg's default preset)."""
    buf = io.BytesIO()
    fmt = {"vp8": "webm", "h264": "mp4"}[codec]
    rate = fractions.Fraction(fps).limit_denominator(1000)
    with av.open(buf, "w", format=fmt) as container:
        stream = None
        for i, image in enumerate(frames):
            if stream is None:
                h, w = image.shape[:2]
                stream = container.add_stream("libvpx" if codec == "vp8" else "libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
                stream.bit_rate = bitrate
                if codec == "vp8":
                    stream.codec_context.options = ({"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
                                                    if fast else {"deadline": "good", "cpu-used": "4"})
                else:
                    stream.codec_context.options = {"preset": "veryfast" if fast else "medium"}
                stream.codec_context.thread_count = 1  # deterministic output (and libvpx keeps its bitrate)
            h, w = stream.height, stream.width
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
            frame.pts = i
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        if stream is None:
            raise ValueError("no frames to encode")
        container.mux(stream.encode(None))
    return buf.getvalue()


def decode(data: bytes, fmt: str = "bgr24") -> Iterator[np.ndarray]:
    with av.open(io.BytesIO(data), "r") as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format=fmt)


def bitrate_of(data: bytes) -> float:
    with av.open(io.BytesIO(data), "r") as container:
        s = container.streams.video[0]
        if s.frames and s.average_rate is not None:
            duration = float(s.frames / s.average_rate)
        elif container.duration is not None:
            duration = float(container.duration / 1e6)
        else:
            raise ValueError("the clip tells neither its frame count and rate nor its duration")
    return len(data) * 8 / duration
