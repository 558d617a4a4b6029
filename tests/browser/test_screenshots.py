"""The screenshot command (tests/browser/screenshots.py) gives every page in every language."""

from __future__ import annotations

import pytest
from PIL import Image

from i18n import LOCALES

from .screenshots import SIZES, take_screenshots


@pytest.mark.browser
def test_every_page_in_every_language(browser_prerequisites, tmp_path):
    out = tmp_path / "shots"
    shots = take_screenshots(out)
    assert sorted(shots) == sorted(out / f"{page}-{lang}.png" for page in SIZES for lang in LOCALES)
    for page in SIZES:
        for lang in LOCALES:
            with Image.open(out / f"{page}-{lang}.png") as image:
                assert image.size == SIZES[page], (page, lang)
                colours = len(image.convert("RGB").getcolors(1 << 24) or [])
            assert colours > 50, f"{page}-{lang} looks blank ({colours} colours)"
