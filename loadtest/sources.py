"""Cheap synthetic media for synthetic participants.

The video is a moving pattern (so a decoder has real motion to encode and a test
can tell frames apart); the audio is a quiet tone.
"""

from __future__ import annotations

import fractions
import math
from typing import cast

import numpy as np
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame
from numpy.typing import NDArray


class PatternVideoTrack(VideoStreamTrack):
    def __init__(self, width: int = 320, height: int = 240, seed: int = 0) -> None:
        super().__init__()
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        self._base = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        self.frames_sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        shift = (self.frames_sent * 4) % self.width
        image = np.roll(self._base, shift, axis=1)
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        self.frames_sent += 1
        return frame


class PhotoVideoTrack(VideoStreamTrack):
    """A photograph (e.g. a face) on a canvas, drifting and turning slightly, like a patient holding a phone."""

    def __init__(self, image_bgr: np.ndarray, width: int = 640, height: int = 480) -> None:
        super().__init__()
        import cv2  # only this source needs OpenCV

        self._cv2 = cv2
        scale = min(width / image_bgr.shape[1], height / image_bgr.shape[0]) * 0.9
        self._photo = cv2.resize(image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        self.width, self.height = width, height
        self.frames_sent = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        t = self.frames_sent / 30
        self.frames_sent += 1
        angle = 3 * math.sin(t * 0.7)
        dx, dy = 10 * math.sin(t * 0.5), 6 * math.cos(t * 0.4)
        h, w = self._photo.shape[:2]
        matrix = self._cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        matrix[:, 2] += ((self.width - w) / 2 + dx, (self.height - h) / 2 + dy)
        image = self._cv2.warpAffine(self._photo, matrix, (self.width, self.height), borderValue=(40, 40, 40))
        # OpenCV's stubs type the result loosely; it keeps the source photo's dtype, uint8 (bgr24)
        frame = VideoFrame.from_ndarray(cast(NDArray[np.uint8], image), format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneAudioTrack(AudioStreamTrack):
    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self._frequency = frequency
        self._samples = 0

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # paced silence with correct pts
        assert isinstance(frame, AudioFrame)  # aiortc's AudioStreamTrack.recv() makes one (typed as av's Frame)
        n = frame.samples
        t = (np.arange(n) + self._samples) / frame.sample_rate
        self._samples += n
        tone = (np.sin(2 * math.pi * self._frequency * t) * 3000).astype(np.int16)
        out = AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        return out
