"""Cheap synthetic media for synthetic participants.

The video is a moving pattern (so a decoder has real motion to encode and a test
can tell frames apart); the audio is a quiet tone.
"""

from __future__ import annotations

import fractions
import math

import numpy as np
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import AudioFrame, VideoFrame


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


class ToneAudioTrack(AudioStreamTrack):
    def __init__(self, frequency: float = 440.0) -> None:
        super().__init__()
        self._frequency = frequency
        self._samples = 0

    async def recv(self) -> AudioFrame:
        frame = await super().recv()  # paced silence with correct pts
        n = frame.samples
        t = (np.arange(n) + self._samples) / frame.sample_rate
        self._samples += n
        tone = (np.sin(2 * math.pi * self._frequency * t) * 3000).astype(np.int16)
        out = AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        return out
