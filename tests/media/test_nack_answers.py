"""media/nack_answers.py on its own: which NACKs are answered, the downlink loss they
measure, and stale NACKs turned into one keyframe request per late stretch."""

from __future__ import annotations

import pytest

from media.nack_answers import (
    CROSSING_RTTS,
    LOSS_SAMPLE_PACKETS,
    STALE_NACK_S,
    STALE_STRETCH_PACKETS,
    NackAnswers,
)
from media.packet_cache import SentPacket
from media.redundancy import LossEstimate


def packet(seq: int, sent_at: float = 0.0, late: bool = False) -> SentPacket:
    return SentPacket(seq, 0, 0, 96, b"x", sent_at=sent_at, late=late)


def answers(video: bool = True) -> NackAnswers:
    return NackAnswers(video=video, downlink_loss=LossEstimate())


def nack(a: NackAnswers, sent: SentPacket, now: float, **kw):
    args = {"rtt": 0.1, "congested": False, "paused": False, "newest_sent": sent.sequence_number, **kw}
    return a.on_nack(sent, now, **args)


def test_loss_is_sampled_from_nacked_first_transmissions():
    a = answers()
    for _ in range(LOSS_SAMPLE_PACKETS - 1):
        assert a.first_sent() is False
    for sent in [packet(seq) for seq in range(5)]:
        nack(a, sent, now=0.05)
        nack(a, sent, now=0.15)  # asked again: still one loss
    assert a.nacked_in_sample == 5
    assert a.first_sent() is True  # the sample is complete: 5 of 50
    assert a.downlink_loss.value > 0 and a.nacked_in_sample == 0


def test_loss_on_a_congested_link_is_the_queues_and_no_sample():
    a = answers()
    decision = nack(a, packet(1), now=0.05, congested=True)
    assert decision.answer and a.nacked_in_sample == 0


def test_a_nack_that_crossed_a_late_packet_is_not_answered_on_a_clean_downlink():
    a = answers()
    late = packet(7, sent_at=10.0, late=True)
    decision = nack(a, late, now=10.0 + 0.9 * CROSSING_RTTS * 0.1)
    assert (decision.answer, decision.keyframe, a.crossed, a.nacked_in_sample) == (False, False, 1, 0)
    # after the crossing window it is a real loss
    assert nack(a, late, now=10.0 + 1.1 * CROSSING_RTTS * 0.1).answer and a.nacked_in_sample == 1


def test_a_crossed_nack_is_answered_on_a_lossy_downlink():
    a = answers()
    a.downlink_loss.add(30, 100)
    assert a.downlink_loss.copies > 1
    assert nack(a, packet(7, sent_at=10.0, late=True), now=10.01).answer


def test_stale_nacks_ask_for_one_keyframe_per_late_stretch():
    a = answers()
    now = 100.0
    old = [packet(seq, sent_at=now - STALE_NACK_S - 0.1) for seq in range(10, 20)]
    decisions = [nack(a, p, now, newest_sent=40) for p in old]
    assert [d.keyframe for d in decisions] == [True] + [False] * 9 and a.stale_keyframes == 1
    # a packet after the one the request covered is a new stretch
    assert nack(a, packet(41, sent_at=now - 2), now, newest_sent=60).keyframe
    # one further back than the cache reaches is from an old stretch: asked again
    far = packet((60 + STALE_STRETCH_PACKETS + 5) & 0xFFFF, sent_at=now - 2)
    assert nack(a, far, now, newest_sent=far.sequence_number).keyframe and a.stale_keyframes == 3


@pytest.mark.parametrize("kw", [{"paused": True}, {"congested": True}])
def test_no_keyframe_for_a_paused_or_congested_video(kw):
    a = answers()
    assert not nack(a, packet(1, sent_at=0.0), now=5.0, **kw).keyframe


def test_audio_nacks_are_answered_but_neither_sampled_nor_escalated():
    a = answers(video=False)
    decision = nack(a, packet(1, sent_at=0.0), now=5.0)
    assert decision.answer and not decision.keyframe and a.nacked_in_sample == 0
