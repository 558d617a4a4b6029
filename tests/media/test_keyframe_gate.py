"""media/keyframe_gate.py on its own: a starting video drops packets until a keyframe, asking its
source for one at once and every KEYFRAME_RETRY_S; a reset closes it again; audio never waits.
Then the gate as a down-track uses it."""

from __future__ import annotations

import time

import pytest

from media.keyframe_gate import DROP, DROP_AND_ASK, KEYFRAME_RETRY_S, OPEN, KeyframeGate
from tests.media.test_downtrack_downlink import FakeSource, send, started


def test_a_new_video_gate_drops_until_a_keyframe_and_asks_with_the_first_packet_dropped():
    gate = KeyframeGate(video=True)
    assert gate.waiting
    assert gate.admit(False, 100.0) == DROP_AND_ASK  # never asked: at once
    assert gate.admit(False, 100.1) == DROP
    assert gate.admit(True, 100.2) == OPEN
    assert not gate.waiting


def test_it_asks_again_every_retry_interval_while_it_waits():
    gate = KeyframeGate(video=True)
    # a packet every 50 ms for 2.2 s, none of them a keyframe
    asked = [now for now in [100.0 + k * 0.05 for k in range(45)] if gate.admit(False, now)[1]]
    # at once, then with the first packet more than KEYFRAME_RETRY_S after each ask
    assert asked == pytest.approx([100.0, 100.55, 101.1, 101.65, 102.2])


def test_exactly_the_retry_interval_is_not_yet_a_retry():
    gate = KeyframeGate(video=True)
    gate.reset(10.0)
    assert gate.admit(False, 10.0 + KEYFRAME_RETRY_S) == DROP
    assert gate.admit(False, 10.0 + KEYFRAME_RETRY_S + 0.001) == DROP_AND_ASK


def test_once_open_it_forwards_delta_frames():
    gate = KeyframeGate(video=True)
    gate.admit(True, 0.0)
    assert [gate.admit(False, 0.1 * k) for k in range(1, 20)] == [OPEN] * 19


def test_a_reset_closes_it_and_counts_as_asked():
    """Attaching, a layer switch, a restarted source, a pause or a resume: the stream starts over
    at a keyframe. Whoever reset it asked (or its source did), so the first retry is an interval on."""
    gate = KeyframeGate(video=True)
    assert gate.admit(True, 5.0) == OPEN
    gate.reset(6.0)
    assert gate.waiting
    assert gate.admit(False, 6.1) == DROP
    assert gate.admit(False, 6.0 + KEYFRAME_RETRY_S + 0.01) == DROP_AND_ASK
    assert gate.admit(True, 6.6) == OPEN
    gate.reset(7.0)  # closed again, however often
    assert gate.admit(False, 7.1) == DROP


def test_audio_never_waits_and_never_asks():
    gate = KeyframeGate(video=False)
    assert not gate.waiting
    assert gate.admit(False, 0.0) == OPEN
    gate.reset(1.0)
    assert gate.admit(False, 1.0) == OPEN


def test_its_answers_are_shared_constants():
    """The down-track consults it per packet until it forwards: answering allocates nothing."""
    gate = KeyframeGate(video=True)
    assert gate.admit(False, 0.0) is DROP_AND_ASK
    assert gate.admit(False, 0.1) is DROP
    assert gate.admit(True, 0.2) is OPEN


async def test_a_down_track_starts_at_a_keyframe_and_asks_its_source_while_it_waits() -> None:
    downtrack, transport, source = await started()
    asked = source.keyframe_requests  # start() asked already
    await send(downtrack, 100, 9000)  # a delta frame: dropped, and attaching counted as asking
    assert transport.sent == [] and source.keyframe_requests == asked
    downtrack._gate.reset(time.monotonic() - KEYFRAME_RETRY_S - 0.01)  # as if the last ask was long ago
    await send(downtrack, 101, 9000)
    assert transport.sent == [] and source.keyframe_requests == asked + 1
    await send(downtrack, 102, 12000, keyframe=True)
    await send(downtrack, 103, 15000)
    assert len(transport.sent) == 2
    downtrack.switch_feed(FakeSource())  # another layer: carried from its next keyframe
    await send(downtrack, 5000, 70000)
    assert len(transport.sent) == 2
    await send(downtrack, 5001, 73000, keyframe=True)
    assert len(transport.sent) == 3
    await downtrack.stop()
