"""Forensic and visible watermarks on real video: embed -> encode (PyAV) -> the leaker's
transform and re-encode -> decode -> detect, on a moving photograph.

Clips are 640x360, 12 fps, 10 s (the full-size figures are in loadtest/bench_watermark.py and
docs/BENCHMARKS.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtest.synthetic_video import CLEAN_KINDS, bitrate_of, clean_clip, decode, encode, moving_photo
from loadtest.watermark_leak import ATTACKS, LEAK_BITRATE, Exported, detect_file, export_clip, leak
from media.processors import ecc
from media.processors.watermark import Pattern
from media.processors.watermark_detect import SYNC_PRESENT_Z, ClipAccumulator, detect_frames, detect_image
from media.processors.watermark_embed import ForensicEmbedder, VisibleMark, Watermarker, drift_position, viewer_label

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
WM_ID = 0x5EC0A1D7
W, H, FPS, SECONDS = 640, 360, 12, 10


# -- error control ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_code_corrects_noisy_soft_bits_and_crc_rejects_noise():
    rng = np.random.default_rng(7)
    scramble = rng.integers(0, 2, ecc.INFO_BITS).astype(np.uint8)
    decoded, raw_errors = 0, []
    for _ in range(200):
        wm_id = int(rng.integers(1, 2 ** 32))
        code = ecc.encode_payload(wm_id, scramble)
        assert code.size == ecc.CODE_BITS == 162
        soft = (1 - 2.0 * code) + rng.normal(0, 0.9, code.size)     # ~13 % hard-decision errors
        raw_errors.append(np.mean((soft < 0) != (code == 1)))
        decoded += ecc.decode_payload(soft, scramble)[0] == wm_id
    assert np.mean(raw_errors) > 0.1
    assert decoded >= 196
    # pure noise, a blank and a constant picture never give a valid payload
    false = sum(ecc.decode_payload(rng.normal(0, 1, ecc.CODE_BITS), scramble)[0] is not None for _ in range(3000))
    assert false <= 2   # expected 3000 * 2^-16 = 0.05
    assert ecc.decode_payload(np.zeros(ecc.CODE_BITS), scramble)[0] is None
    assert ecc.decode_payload(np.ones(ecc.CODE_BITS), scramble)[0] is None


def test_viterbi_is_exact_without_noise_and_corrects_a_burst():
    rng = np.random.default_rng(1)
    info = rng.integers(0, 2, 48).astype(np.uint8)
    code = ecc.conv_encode(info)
    soft = 1 - 2.0 * code
    assert np.array_equal(ecc.viterbi_decode(soft, 48), info)
    soft[60:64] *= -1          # four consecutive code bits flipped
    assert np.array_equal(ecc.viterbi_decode(soft, 48), info)


def test_crc16_known_value():
    bits = np.unpackbits(np.frombuffer(b"123456789", np.uint8))
    assert ecc.crc16(bits) == 0x29B1   # CRC-16/CCITT-FALSE check value


# -- the pattern -------------------------------------------------------------------------------------------

def test_pattern_is_keyed_band_limited_and_carries_the_id():
    a, b = Pattern(KEY), Pattern(OTHER_KEY)
    t1, t2 = a.tile_image(WM_ID), a.tile_image(WM_ID ^ 1)
    assert np.array_equal(t1, Pattern(KEY).tile_image(WM_ID))               # deterministic from the key
    assert abs(np.corrcoef(t1.ravel(), b.tile_image(WM_ID).ravel())[0, 1]) < 0.15   # another key: unrelated
    assert np.corrcoef(t1.ravel(), t2.ravel())[0, 1] < 0.9                   # one id bit changes the tile
    spectrum = np.abs(np.fft.fft2(t1))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(64) * 64, np.fft.fftfreq(64) * 64, indexing="ij"))
    assert spectrum[(radius < 2.4) | (radius > 13.6)].max() < 1e-6 * spectrum.max()


# -- embedding ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (360, 640)])
def test_invisible_mark_psnr_at_least_40_db_and_luma_only(size):
    w, h = size
    embedder = ForensicEmbedder(KEY, WM_ID)
    frames = list(moving_photo(w, h, 8, seed=2)) + list(clean_clip("smooth", w, h, 2, 3, 12))
    for frame in frames:
        marked = embedder.embed(frame)
        diff = marked.astype(np.float64) - frame
        psnr = 10 * math.log10(255 ** 2 / np.mean(diff ** 2))
        assert 40.0 <= psnr < 45.0, psnr
        unclipped = (marked > 0).all(axis=2) & (marked < 255).all(axis=2)
        assert np.array_equal(diff[unclipped, 0], diff[unclipped, 1])    # same change in B, G and R: luma only
        assert np.array_equal(diff[unclipped, 1], diff[unclipped, 2])


def test_mask_puts_less_mark_on_flat_areas():
    frame = next(moving_photo(W, H, 1, seed=0))
    frame[:, : W // 2] = 128                                       # left half flat
    delta = ForensicEmbedder(KEY, WM_ID).delta(frame)
    flat, textured = np.std(delta[:, 40: W // 2 - 40]), np.std(delta[:, W // 2 + 40: -40])
    assert flat < 0.75 * textured


def test_visible_mark_is_drawn_and_drifts_over_the_whole_frame():
    frame = next(moving_photo(W, H, 1, seed=0))
    mark = VisibleMark(viewer_label("Dr. Ana Müller", WM_ID))
    a = mark.draw(frame.copy(), 0)
    b = mark.draw(frame.copy(), 20_000)
    changed_a = np.argwhere((a != frame).any(axis=2))
    changed_b = np.argwhere((b != frame).any(axis=2))
    assert len(changed_a) > 500 and len(changed_b) > 500
    assert (abs(changed_a[:, 0].mean() - changed_b[:, 0].mean())
            + abs(changed_a[:, 1].mean() - changed_b[:, 1].mean())) > 40
    # semi-transparent: the picture shows through the text
    assert np.abs(a.astype(int) - frame)[changed_a[:, 0], changed_a[:, 1]].max() < 200
    # over one lap the label visits every side of the frame: no fixed crop keeps it out
    path = np.array([drift_position(t, 1000, 1000) for t in np.arange(0, 90, 0.5)])
    assert path[:, 0].min() < 50 and path[:, 0].max() > 950 and path[:, 1].min() < 50 and path[:, 1].max() > 950
    # slowly (at most ~1/9 of the frame per second), yet any 15 s clip sees it cross a good part of the frame
    assert np.abs(np.diff(path, axis=0)).max() < 1000 / 9 * 0.5
    for start in range(0, 90, 5):
        window = path[2 * start: 2 * start + 30]
        if len(window) == 30:
            assert np.ptp(window[:, 0]) + np.ptp(window[:, 1]) > 400


# -- the real pipeline ----------------------------------------------------------------------------------------

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


def test_watermarker_frame_hook_is_what_export_calls():
    marker = Watermarker(KEY, WM_ID, viewer_label("Dr. Example", WM_ID))
    frames = [marker.frame_hook(f, int(i * 1000 / FPS)) for i, f in enumerate(moving_photo(W, H, 24, seed=1))]
    assert detect_frames(Pattern(KEY), frames).wm_id == WM_ID
    assert detect_image(Pattern(KEY), np.full((H, W), 128, np.float32)).wm_id is None   # blank picture
