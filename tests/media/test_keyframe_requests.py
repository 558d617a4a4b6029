"""Keyframe requests are coalesced and rate limited (on a manual clock: no real waiting)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

from media.keyframe_requests import KeyframeRequester


class ManualClock:
    """time() and call_later() for the requester; advance() moves time and runs what fell due."""

    def __init__(self) -> None:
        self.now = 100.0
        self._due: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(callback)
        heapq.heappush(self._due, (self.now + delay, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._due and self._due[0][0] <= end:
            when, _, timer = heapq.heappop(self._due)
            self.now = when
            if not timer.cancelled:
                timer.callback()
        self.now = end


class Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def requester_on(clock: ManualClock, min_interval: float) -> tuple[KeyframeRequester, list[float]]:
    """A requester whose PLIs are recorded with the clock's time when sent."""
    sent: list[float] = []

    async def send_pli() -> None:
        sent.append(clock.now)

    return KeyframeRequester(send_pli, min_interval=min_interval, clock=clock.time,
                             call_later=clock.call_later), sent


async def settle() -> None:
    """Lets the PLI tasks the requester started run (no time passes on the manual clock)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_requests_inside_the_interval_become_one_deferred_pli():
    clock = ManualClock()
    requester, sent = requester_on(clock, min_interval=0.2)
    start = clock.now
    for _ in range(10):  # ten subscribers ask at once
        requester.request()
    await settle()
    assert sent == [start]
    clock.advance(0.05)
    requester.request()
    requester.request()
    clock.advance(0.14)
    await settle()
    assert len(sent) == 1  # still inside the interval
    clock.advance(0.01)
    await settle()
    assert sent == [start, start + 0.2]  # the two later requests shared one PLI, sent when the interval ended
    assert requester.requested_count == 12 and requester.sent_count == 2
    requester.close()


async def test_close_cancels_a_deferred_request():
    clock = ManualClock()
    requester, sent = requester_on(clock, min_interval=0.1)
    requester.request()
    requester.request()
    requester.close()
    clock.advance(0.2)
    await settle()
    assert len(sent) == 1


async def test_a_failing_send_does_not_break_later_requests():
    calls = []

    async def send_pli() -> None:
        calls.append(1)
        raise ConnectionError("transport closed")

    requester = KeyframeRequester(send_pli, min_interval=0.0)
    requester.request()
    await settle()
    requester.request()
    await settle()
    assert len(calls) == 2


async def test_a_keyframe_arriving_answers_a_deferred_request():
    """A keyframe still in flight must not be followed by a second PLI that nobody needs."""
    clock = ManualClock()
    requester, sent = requester_on(clock, min_interval=0.1)
    requester.request()  # sent at once
    requester.request()  # deferred to the end of the interval
    clock.advance(0.02)
    requester.keyframe_started()  # the first PLI's keyframe starts arriving
    clock.advance(0.15)
    await settle()
    assert len(sent) == 1 and requester.satisfied_count == 1
    requester.request()  # a later loss still gets its own PLI
    await settle()
    assert len(sent) == 2
    requester.close()


async def test_without_a_manual_clock_the_deferred_pli_runs_on_the_event_loop():
    """The default timers: one deferred PLI really goes out once the interval has passed."""
    sent: list[float] = []
    loop = asyncio.get_running_loop()

    async def send_pli() -> None:
        sent.append(loop.time())

    requester = KeyframeRequester(send_pli, min_interval=0.05, clock=loop.time)
    start = loop.time()
    requester.request()
    requester.request()
    deadline = start + 10
    while len(sent) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert len(sent) == 2 and sent[1] - start >= 0.049
    requester.close()
