"""A publisher's layers: back at once when wanted, off only after being unwanted a while."""

from __future__ import annotations

import pytest

from media.publisher_layers import LOWER_AFTER_S, PublisherLayers


def layers(count: int = 3) -> tuple[PublisherLayers, list[int]]:
    told: list[int] = []
    return PublisherLayers(count, told.append), told


def test_all_layers_to_start_with_and_nothing_said_while_all_are_wanted():
    publisher, told = layers()
    for second in range(10):
        publisher.update(3, float(second))
    assert publisher.active == 3 and told == []


def test_unwanted_layers_go_only_after_the_wait():
    publisher, told = layers()
    publisher.update(1, 0.0)
    publisher.update(1, LOWER_AFTER_S - 0.1)
    assert told == []
    publisher.update(1, LOWER_AFTER_S)
    assert told == [1] and publisher.active == 1


def test_a_layer_wanted_again_within_the_wait_is_never_turned_off():
    publisher, told = layers()
    publisher.update(2, 0.0)
    publisher.update(3, LOWER_AFTER_S / 2)  # the tile grew back
    publisher.update(2, LOWER_AFTER_S * 0.9)
    publisher.update(2, LOWER_AFTER_S * 1.2)
    assert told == []  # the wait began anew


def test_layers_come_back_at_once():
    publisher, told = layers()
    publisher.update(1, 0.0)
    publisher.update(1, LOWER_AFTER_S)
    publisher.update(3, LOWER_AFTER_S + 0.1)
    assert told == [1, 3] and publisher.changes == 2


def test_never_fewer_than_one_nor_more_than_it_has():
    publisher, told = layers()
    publisher.update(0, 0.0)
    publisher.update(0, LOWER_AFTER_S)
    publisher.update(7, LOWER_AFTER_S + 1)
    assert told == [1, 3]
    with pytest.raises(ValueError):
        PublisherLayers(0, told.append)
