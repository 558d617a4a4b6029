"""The key's tile (watermark/pattern.py): keyed, band-limited, carrying the id."""

from __future__ import annotations

import numpy as np

from watermark.pattern import Pattern

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
WM_ID = 0x5EC0A1D7


def test_pattern_is_keyed_band_limited_and_carries_the_id():
    a, b = Pattern(KEY), Pattern(OTHER_KEY)
    t1, t2 = a.tile_image(WM_ID), a.tile_image(WM_ID ^ 1)
    assert np.array_equal(t1, Pattern(KEY).tile_image(WM_ID))               # deterministic from the key
    assert abs(np.corrcoef(t1.ravel(), b.tile_image(WM_ID).ravel())[0, 1]) < 0.15   # another key: unrelated
    assert np.corrcoef(t1.ravel(), t2.ravel())[0, 1] < 0.9                   # one id bit changes the tile
    spectrum = np.abs(np.fft.fft2(t1))
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(64) * 64, np.fft.fftfreq(64) * 64, indexing="ij"))
    assert spectrum[(radius < 2.4) | (radius > 13.6)].max() < 1e-6 * spectrum.max()
