"""How many copies of recovery traffic a lossy link gets, and the loss estimate behind it."""

from __future__ import annotations

import random

import pytest

from media.redundancy import AUDIO_RESIDUAL_LOSS, LossEstimate, copies_for_loss


@pytest.mark.parametrize("loss, copies", [(0.0, 1), (0.02, 1), (0.05, 1), (0.1, 2), (0.2, 2), (0.3, 3), (0.6, 3)])
def test_copies_keep_the_chance_of_losing_every_copy_under_five_percent(loss, copies):
    assert copies_for_loss(loss) == copies


@pytest.mark.parametrize("loss, copies", [(0.0, 1), (0.02, 1), (0.05, 2), (0.1, 2), (0.15, 3), (0.2, 3), (0.3, 3)])
def test_audio_copies_keep_that_chance_under_two_percent(loss, copies):
    assert copies_for_loss(loss, AUDIO_RESIDUAL_LOSS) == copies


def test_the_estimate_follows_the_link_and_comes_back_down():
    rng = random.Random(3)
    estimate = LossEstimate()
    for _ in range(40):  # 40 samples of 50 packets at 30 % loss
        estimate.add(sum(rng.random() < 0.3 for _ in range(50)), 50)
    assert 0.25 < estimate.value < 0.35 and estimate.copies == estimate.audio_copies == 3
    for _ in range(10):  # the link clears up: back to single copies within ~500 packets
        estimate.add(0, 50)
    assert estimate.value < 0.02 and estimate.copies == estimate.audio_copies == 1


def test_at_twenty_percent_audio_gets_a_third_copy_where_recovery_traffic_gets_two():
    estimate = LossEstimate()
    for _ in range(60):
        estimate.add(10, 50)
    assert 0.19 < estimate.value < 0.21 and (estimate.copies, estimate.audio_copies) == (2, 3)


def test_empty_samples_change_nothing():
    estimate = LossEstimate()
    estimate.add(5, 10)
    value = estimate.value
    estimate.add(0, 0)
    assert estimate.value == value
