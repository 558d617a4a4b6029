"""Keyframe detection on payloads from real VP8 / H.264 encoders."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from media.codec_inspect import (
    h264_is_keyframe_start,
    keyframe_detector,
    keyframe_size_reader,
    vp8_is_keyframe_start,
    vp8_keyframe_size,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=99,
                             parameters={"packetization-mode": "1", "profile-level-id": "42e01f"})


def encoded_frames(codec, count: int, keyframes_at: set[int], size: tuple[int, int] = (320, 240)) -> list[list[bytes]]:
    encoder = get_encoder(codec)
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        frame = VideoFrame.from_ndarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), format="bgr24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        payloads, _ = encoder.encode(frame, force_keyframe=i in keyframes_at)
        out.append(payloads)
    return out


@pytest.mark.parametrize("codec, detect", [(VP8, vp8_is_keyframe_start), (H264, h264_is_keyframe_start)])
def test_finds_exactly_the_first_packet_of_each_keyframe(codec, detect):
    frames = encoded_frames(codec, 8, keyframes_at={0, 5})
    for index, payloads in enumerate(frames):
        flags = [detect(p) for p in payloads]
        if index in (0, 5):
            assert flags[0], f"frame {index} is a keyframe"
            if codec is VP8:
                assert not any(flags[1:])  # continuation packets are not starts
        else:
            assert not any(flags), f"frame {index} is a delta frame"


def test_truncated_and_garbage_payloads_are_not_keyframes():
    for payload in (b"", b"\x90", b"\x90\x80", b"\x10", bytes(range(256))[:3]):
        assert vp8_is_keyframe_start(payload) in (True, False)
    assert not vp8_is_keyframe_start(b"")
    assert not h264_is_keyframe_start(b"")
    assert not h264_is_keyframe_start(b"\x18\xff\xff\x67")  # STAP-A with a size past the end
    assert not h264_is_keyframe_start(b"\x1c")  # FU-A without its header


def test_detector_by_codec_name():
    assert keyframe_detector("VP8") is vp8_is_keyframe_start
    assert keyframe_detector("h264") is h264_is_keyframe_start
    assert keyframe_detector("opus") is None


def test_size_reader_by_codec_name():
    assert keyframe_size_reader("vp8") is vp8_keyframe_size
    assert keyframe_size_reader("H264") is None and keyframe_size_reader("opus") is None


@pytest.mark.parametrize("size", [(320, 240), (640, 360), (1280, 720)])
def test_keyframe_size_is_read_from_the_first_packet_of_a_keyframe_only(size):
    frames = encoded_frames(VP8, 3, keyframes_at={0}, size=size)
    assert vp8_keyframe_size(frames[0][0]) == size
    assert [vp8_keyframe_size(p) for p in frames[0][1:]] == [None] * (len(frames[0]) - 1)
    assert {vp8_keyframe_size(p) for frame in frames[1:] for p in frame} == {None}


def test_keyframe_size_of_truncated_or_damaged_payloads_is_none():
    first = encoded_frames(VP8, 1, keyframes_at={0})[0][0]
    header = first.index(b"\x9d\x01\x2a") - 3  # the payload descriptor's length
    assert [vp8_keyframe_size(first[:cut]) for cut in range(header + 10)] == [None] * (header + 10)
    assert vp8_keyframe_size(first[:header + 10]) == (320, 240)
    damaged = bytearray(first)
    start = first.index(b"\x9d\x01\x2a")
    damaged[start] = 0
    assert vp8_keyframe_size(bytes(damaged)) is None
