"""Coalesces keyframe requests for one published video track and rate-limits them.

Every subscriber that starts, loses a picture or sends PLI/FIR asks for a
keyframe; the publisher should see one PLI per interval, not one per subscriber.
A request inside the interval is remembered and sent when the interval ends, so
nobody who asked is left waiting for the publisher's next periodic keyframe --
unless a keyframe starts arriving before then: a keyframe that begins after a
request answers it, whoever asked for it. At 30 % loss a keyframe takes several
round trips to complete, and a second PLI while the first one's keyframe is still
in flight would only make the publisher send another large frame into the same
lossy link.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Optional, Protocol

MIN_INTERVAL_S = 0.3


class Cancellable(Protocol):
    def cancel(self) -> None: ...


# asyncio's loop.call_later by default; tests pass a manual clock's, with its time()
CallLater = Callable[[float, Callable[[], None]], Cancellable]


class KeyframeRequester:
    def __init__(
        self,
        send_pli: Callable[[], Awaitable[None]],
        min_interval: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
        call_later: Optional[CallLater] = None,
    ) -> None:
        self._send_pli = send_pli
        self._min_interval = min_interval
        self._clock = clock
        self._call_later = call_later
        self._last_sent: Optional[float] = None
        self._deferred: Optional[Cancellable] = None
        self.sent_count = 0
        self.requested_count = 0
        self.satisfied_count = 0  # deferred requests a keyframe answered before their PLI was due

    def request(self) -> None:
        self.requested_count += 1
        if self._deferred is not None:
            return  # already coalesced into the pending request
        now = self._clock()
        if self._last_sent is None or now - self._last_sent >= self._min_interval:
            self._fire()
        else:
            delay = self._min_interval - (now - self._last_sent)
            call_later = self._call_later or asyncio.get_running_loop().call_later
            self._deferred = call_later(delay, self._fire_deferred)

    def keyframe_started(self) -> None:
        """A keyframe began arriving from the publisher: it answers every request made so far."""
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
            self.satisfied_count += 1

    def _fire_deferred(self) -> None:
        self._deferred = None
        self._fire()

    def _fire(self) -> None:
        self._last_sent = self._clock()
        self.sent_count += 1
        task = asyncio.ensure_future(self._send_pli())
        task.add_done_callback(_consume_exception)

    def close(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None


def _consume_exception(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()
