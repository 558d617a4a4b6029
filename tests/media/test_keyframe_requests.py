"""Keyframe requests are coalesced and rate limited."""

from __future__ import annotations

import asyncio

from media.keyframe_requests import KeyframeRequester


async def test_requests_inside_the_interval_become_one_deferred_pli():
    sent: list[float] = []
    loop = asyncio.get_running_loop()

    async def send_pli() -> None:
        sent.append(loop.time())

    requester = KeyframeRequester(send_pli, min_interval=0.2, clock=loop.time)
    start = loop.time()
    for _ in range(10):  # ten subscribers ask at once
        requester.request()
    await asyncio.sleep(0.01)
    assert len(sent) == 1
    requester.request()
    requester.request()
    await asyncio.sleep(0.3)
    assert len(sent) == 2  # the two later requests shared one PLI, sent when the interval ended
    assert sent[1] - start >= 0.19
    assert requester.requested_count == 12 and requester.sent_count == 2
    requester.close()


async def test_close_cancels_a_deferred_request():
    sent = []

    async def send_pli() -> None:
        sent.append(1)

    requester = KeyframeRequester(send_pli, min_interval=0.1)
    requester.request()
    requester.request()
    requester.close()
    await asyncio.sleep(0.2)
    assert len(sent) == 1


async def test_a_failing_send_does_not_break_later_requests():
    calls = []

    async def send_pli() -> None:
        calls.append(1)
        raise ConnectionError("transport closed")

    requester = KeyframeRequester(send_pli, min_interval=0.0)
    requester.request()
    await asyncio.sleep(0)
    requester.request()
    await asyncio.sleep(0.01)
    assert len(calls) == 2


async def test_a_keyframe_arriving_answers_a_deferred_request():
    """A keyframe still in flight must not be followed by a second PLI that nobody needs."""
    sent: list[float] = []
    loop = asyncio.get_running_loop()

    async def send_pli() -> None:
        sent.append(loop.time())

    requester = KeyframeRequester(send_pli, min_interval=0.1, clock=loop.time)
    requester.request()  # sent at once
    requester.request()  # deferred to the end of the interval
    await asyncio.sleep(0.02)
    requester.keyframe_started()  # the first PLI's keyframe starts arriving
    await asyncio.sleep(0.15)
    assert len(sent) == 1 and requester.satisfied_count == 1
    requester.request()  # a later loss still gets its own PLI
    await asyncio.sleep(0.01)
    assert len(sent) == 2
    requester.close()
