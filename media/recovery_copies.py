"""Extra copies of a packet on a lossy downlink: audio, retransmissions and late packets.

One down-track's stage. A lost audio packet has no time for a retransmission before its
playout deadline, and a lost retransmission costs the subscriber another NACK round, so
on a lossy link these go out more than once, a little apart so one short burst of loss
does not take every copy (media/redundancy.py says how many). Copies are recovery
traffic: none while the downlink is congested (a copy there only lengthens the queue),
each one within the subscriber's send budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from .redundancy import COPY_SPACING_S
from .send_budget import SendBudget


class RecoveryCopies:
    def __init__(self, budget: SendBudget, send: Callable[[bytes], Awaitable[None]]) -> None:
        """`send`: puts one recovery packet on the wire (through the pacer)."""
        self._budget = budget
        self._send = send
        self.sent = 0
        self.stopped = False

    def after(self, data: bytes, copies: int) -> None:
        """`copies` - 1 more of a packet just sent, spaced past a short loss burst."""
        if copies > 1 and not self._budget.congested:
            loop = asyncio.get_running_loop()
            for k in range(1, copies):
                loop.call_later(k * COPY_SPACING_S, self._copy, data)

    def _copy(self, data: bytes) -> None:
        if self.stopped or not self._budget.allow_recovery(len(data), time.monotonic()):
            return
        self.sent += 1
        task = asyncio.ensure_future(self._send(data))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
