"""Which layer a tile needs: the smallest whose picture covers the size it is drawn at."""

from __future__ import annotations

from media.layer_sizes import layer_for_view, layer_sizes

LADDER = [(320, 180), (640, 360), (1280, 720)]  # lowest first


def test_the_smallest_layer_that_covers_the_view():
    assert layer_for_view((300, 160), LADDER) == 0
    assert layer_for_view((320, 180), LADDER) == 0
    assert layer_for_view((321, 180), LADDER) == 1  # never stretched: a pixel past l needs m
    assert layer_for_view((640, 360), LADDER) == 1
    assert layer_for_view((900, 300), LADDER) == 2  # either side past m needs h
    assert layer_for_view((600, 361), LADDER) == 2
    assert layer_for_view((3840, 2160), LADDER) == 2  # past every layer: the top


def test_nothing_known_of_the_view_means_the_top_and_a_hidden_tile_the_lowest():
    assert layer_for_view(None, LADDER) == 2
    assert layer_for_view((0, 0), LADDER) == 0
    assert layer_for_view((500, 0), LADDER) == 0


def test_a_layer_of_unknown_size_on_the_way_means_the_top():
    assert layer_for_view((100, 60), [None, (640, 360), (1280, 720)]) == 2
    assert layer_for_view((100, 60), [(320, 180), None, None]) == 0  # l covers it: what is above does not matter


def test_sizes_not_seen_yet_are_worked_out_from_a_known_layer_by_the_ladder():
    assert layer_sizes([None, None, (1280, 720)], [4.0, 2.0, 1.0]) == [(320, 180), (640, 360), (1280, 720)]
    # a camera smaller than the ladder's top: the layers scale with it
    assert layer_sizes([(160, 120), None, None], [4.0, 2.0, 1.0]) == [(160, 120), (320, 240), (640, 480)]
    # what keyframes said wins over the ladder (a browser that would not scale a small camera down)
    assert layer_sizes([(320, 240), (320, 240), None], [4.0, 2.0, 1.0]) == [(320, 240), (320, 240), (1280, 960)]


def test_without_any_known_size_or_scale_nothing_is_guessed():
    assert layer_sizes([None, None], [2.0, 1.0]) == [None, None]
    assert layer_sizes([(640, 360), None], [None, None]) == [(640, 360), None]
