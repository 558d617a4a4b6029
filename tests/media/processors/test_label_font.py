"""The burn-in font (media/fonts.py) that annotation labels and the visible watermark share:
a CJK font is installed and found, Latin text is exactly DejaVu Sans as before, and without
a CJK font nothing is dropped silently."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
from matplotlib.ft2font import FT2Font

from media.fonts import CJK_PACKAGE, DEBIAN_CJK_FONTS, LATIN_FONT, LabelFont, find_cjk_font, label_font


def gb2312_hanzi() -> str:
    """The 6763 hanzi of GB 2312, the characters Simplified Chinese text is written in."""
    chars = []
    for high in range(0xB0, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.append(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                pass
    return "".join(chars)


def test_a_cjk_font_covering_simplified_chinese_is_installed():
    found = find_cjk_font()
    assert found is not None, f"no CJK font: install the Debian package {CJK_PACKAGE} (bash scripts/setup.sh)"
    hanzi = gb2312_hanzi()
    assert len(hanzi) == 6763
    assert label_font().missing(hanzi + "，。：；（）") == ""


def test_without_fontconfig_the_font_is_found_at_its_debian_path():
    code = "from media.fonts import find_cjk_font; f = find_cjk_font(); print(f.path, f.index)"
    env = {**os.environ, "PATH": "/nonexistent"}     # no fc-list, no fc-match
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert out.split() == [str(DEBIAN_CJK_FONTS[0]), "0"]   # fonts-wqy-microhei, which scripts/setup.sh installs


def test_latin_text_is_exactly_dejavu_sans():
    dejavu = FT2Font(str(LATIN_FONT))
    for text in ("Filler 1 ml", "Hyaluronsäure", "Dr. Ana Müller · WM 5ec0a1d7 · 2025-01-31 14:02 UTC"):
        for size in (10, 15.0, 20, 30):
            dejavu.set_size(size, 72)
            dejavu.set_text(text, 0.0)
            dejavu.draw_glyphs_to_bitmap(antialiased=True)
            coverage, baseline = label_font().render(text, size)
            assert np.array_equal(coverage, np.array(dejavu.get_image())), (text, size)
            assert baseline == coverage.shape[0] - round(dejavu.get_descent() / 64) - 1


def test_chinese_glyphs_sit_on_the_latin_baseline():
    coverage, baseline = label_font().render("玻尿酸 1ml", 20)
    rows = np.flatnonzero(coverage.any(axis=1))
    assert baseline - rows.min() <= 18 and rows.max() - baseline <= 4   # within DejaVu's ascent and descent


def test_without_a_cjk_font_chinese_is_drawn_as_boxes_and_the_package_named(caplog):
    font = LabelFont(None)
    with caplog.at_level(logging.WARNING, logger="media.fonts"):
        coverage, _ = font.render("王医生 1ml", 20)
        font.render("王医生", 30)                      # each character is reported once
    boxes, _ = font.render("王医生", 20)
    assert boxes.sum() / 255 > 3 * 40                  # three visible boxes, not nothing
    assert coverage.shape[1] > boxes.shape[1] > 3 * 10
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "王医生" in message and "U+738B" in message and CJK_PACKAGE in message


def test_a_character_no_font_has_is_logged_with_the_cjk_font_too(caplog):
    with caplog.at_level(logging.WARNING, logger="media.fonts"):
        coverage, _ = LabelFont(find_cjk_font()).render("a\U0002a6a5b", 20)   # CJK extension B
    assert "U+2A6A5" in caplog.text and CJK_PACKAGE not in caplog.text
    assert coverage.sum() / 255 > label_font().render("ab", 20)[0].sum() / 255 + 40   # a box between them
