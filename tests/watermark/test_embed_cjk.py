"""The visible watermark shows a Chinese viewer's name (issue 17, item 13): every character of
"王医生" is drawn, in the BGR path (exports, `Watermarker.frame_hook`) and the I420 one
(replays, live `server` watermarks)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from watermark.embed import VisibleMark, Watermarker, viewer_label

KEY = bytes(range(32))
WM_ID = 0x5EC0A1D7
WHEN = dt.datetime(2025, 1, 31, 14, 2, tzinfo=dt.timezone.utc)
NAME = "王医生"
SIZE = 30          # label font size at 720 p


def white_bgr(text: str, hook: bool = False) -> int:
    """Pixels the label's white text covers on a black 1280x720 frame (its dark ring stays < 10)."""
    frame = np.zeros((720, 1280, 3), np.uint8)
    if hook:
        frame = Watermarker(KEY, WM_ID, text).frame_hook(frame, 0)   # + the invisible mark, a few levels
    else:
        VisibleMark(text).draw(frame, 0)
    return int((frame[..., 1] > 60).sum())


def white_i420(text: str) -> int:
    i420 = np.full((1080, 1280), 16, np.uint8)
    i420[720:] = 128
    VisibleMark(text).draw_i420(i420, 0)
    return int((i420[:720] > 100).sum())


def test_each_character_of_a_chinese_name_is_drawn():
    for char in NAME + "李张":
        for drawn in (white_bgr(char), white_i420(char)):
            assert drawn > 0.15 * SIZE * SIZE, (char, drawn)   # a hanzi at 30 px: 170..300 px


def test_a_chinese_name_is_drawn_in_the_viewer_label():
    named, blank = viewer_label(NAME, WM_ID, WHEN)(0), viewer_label(" " * len(NAME), WM_ID, WHEN)(0)
    alone = white_bgr(NAME)
    assert alone > 3 * 0.15 * SIZE * SIZE
    for count in (white_bgr, white_i420, lambda text: white_bgr(text, hook=True)):
        extra = count(named) - count(blank)    # what the name adds to the rest of the label
        assert abs(extra - count(NAME)) < 0.15 * count(NAME), (count, extra, count(NAME))
