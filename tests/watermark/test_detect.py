"""Forensic and visible watermarks on real video: embed -> encode (PyAV) -> the leaker's
transform and re-encode -> decode -> detect, on a moving photograph.

Clips are 640x360, 12 fps, 10 s (the full-size figures are in loadtest/bench_watermark.py and
docs/BENCHMARKS.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.synthetic_video import CLEAN_KINDS, bitrate_of, clean_clip, decode, encode, moving_photo
from loadtest.watermark_leak import ATTACKS, LEAK_BITRATE, Exported, detect_file, export_clip, leak
from watermark import ecc
from watermark.detect import SYNC_PRESENT_Z, ClipAccumulator
from watermark.embed import ForensicEmbedder
from watermark.pattern import Pattern

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
WM_ID = 0x5EC0A1D7
W, H, FPS, SECONDS = 640, 360, 12, 10


@pytest.fixture(scope="module")
def exported() -> Exported:
    """A 10 s export with both marks, encoded as recorder/export.py does (VP8)."""
    return export_clip(KEY, WM_ID, W, H, SECONDS, FPS)


@pytest.fixture(scope="module")
def pattern() -> Pattern:
    return Pattern(KEY)


def test_export_psnr(exported):
    assert exported.psnr_db >= 40.0


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name.split(" (")[0])
def test_traced_after_attack(exported, pattern, attack):
    leaked = leak(exported.data, FPS, attack)
    assert bitrate_of(leaked) < attack.bitrate * 1.25       # really re-encoded at ~500 kbit/s
    detection = detect_file(pattern, leaked)
    truth = ecc.encode_payload(WM_ID, pattern.layout.scramble)
    assert detection.wm_id == WM_ID, (detection.sync_z, detection.ber_against(truth), detection.period)
    assert detection.id_bit_errors(WM_ID) == 0
    assert detection.present and detection.sync_z >= SYNC_PRESENT_Z
    assert detection.ber_against(truth) < 0.2


def test_a_short_clip_is_still_traced(exported, pattern):
    """3 s of the export, re-encoded with H.264 at 500 kbit/s."""
    frames = list(decode(exported.data))[: 3 * FPS]
    leaked = encode(frames, "h264", LEAK_BITRATE, FPS)
    assert detect_file(pattern, leaked).wm_id == WM_ID


def test_portrait_phone_video_is_traced():
    """A phone held upright: 360x640, 5 s, crop + downscale + H.264 500k."""
    exported = export_clip(KEY, WM_ID, 360, 640, 5, FPS)
    detection = detect_file(Pattern(KEY), leak(exported.data, FPS, ATTACKS[-1]))
    assert detection.wm_id == WM_ID


@pytest.mark.parametrize("kind", CLEAN_KINDS)
@pytest.mark.slow
def test_clean_clip_gives_no_watermark(pattern, kind):
    clip = encode(clean_clip(kind, W, H, SECONDS * FPS, 11, FPS), "h264", LEAK_BITRATE, FPS)
    detection = detect_file(pattern, clip)
    assert detection.wm_id is None
    assert not detection.present, detection.sync_z


def test_another_keys_mark_is_not_read(exported):
    detection = detect_file(Pattern(OTHER_KEY), exported.data)
    assert detection.wm_id is None and not detection.present


@pytest.mark.slow
def test_two_viewers_are_told_apart():
    """The same frames marked for two viewers, averaged into one clip (a naive collusion)
    or not: each alone traces to its own id; never to the other."""
    frames = list(moving_photo(W, H, 5 * FPS, seed=9, fps=FPS))
    a, b = ForensicEmbedder(KEY, 0x11111111), ForensicEmbedder(KEY, 0xEEEEEEEE)
    clip_a = encode([a.embed(f) for f in frames], "vp8", LEAK_BITRATE, FPS)
    clip_b = encode([b.embed(f) for f in frames], "h264", LEAK_BITRATE, FPS)
    pattern = Pattern(KEY)
    assert detect_file(pattern, clip_a).wm_id == 0x11111111
    assert detect_file(pattern, clip_b).wm_id == 0xEEEEEEEE


def test_accumulator_uses_the_dominant_frame_size():
    acc = ClipAccumulator()
    for _ in range(3):
        acc.add(np.zeros((36, 64), np.uint8))
    for _ in range(5):
        acc.add(np.full((72, 128), 10, np.uint8))
    assert acc.mean.shape == (72, 128) and acc.frames == 5 and acc.skipped == 3
    assert float(acc.mean.mean()) == 10.0
