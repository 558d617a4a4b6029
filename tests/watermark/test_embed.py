"""The invisible and the visible marks (watermark/embed.py) on a moving photograph: strength,
texture masking, the drifting label, and the frame hook an export calls."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtest.synthetic_video import clean_clip, moving_photo
from watermark.detect import detect_frames, detect_image
from watermark.embed import ForensicEmbedder, VisibleMark, Watermarker, drift_position, viewer_label
from watermark.pattern import Pattern

KEY = bytes(range(32))
WM_ID = 0x5EC0A1D7
W, H, FPS = 640, 360, 12


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


def test_watermarker_frame_hook_is_what_export_calls():
    marker = Watermarker(KEY, WM_ID, viewer_label("Dr. Example", WM_ID))
    frames = [marker.frame_hook(f, int(i * 1000 / FPS)) for i, f in enumerate(moving_photo(W, H, 24, seed=1))]
    assert detect_frames(Pattern(KEY), frames).wm_id == WM_ID
    assert detect_image(Pattern(KEY), np.full((H, W), 128, np.float32)).wm_id is None   # blank picture
