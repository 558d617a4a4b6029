"""Applies loadtest.impairment links to a client peer connection's DTLS transport.

Uplink: `RTCDtlsTransport._send_rtp` (RTP and RTCP, after aiortc decided to
send, before SRTP protects it). Downlink: `_handle_rtp_data` and
`_handle_rtcp_data` (after SRTP unprotect, before aiortc parses and routes).
Working on the clear side of SRTP keeps its replay window and packet index out
of the picture: a delayed packet is protected when it leaves the link, and a
received one was unprotected when it arrived. ICE and DTLS handshake packets
and the signalling WebSocket are not impaired.

Packets that leave a link later than now are delivered by one timer per
direction, in (time, arrival) order; `arrival_time_ms` (used by aiortc's
bandwidth estimator) is the time the packet leaves the link.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Optional

from aiortc import clock
from aiortc.rtcdtlstransport import RTCDtlsTransport

from loadtest.impairment import WIRE_OVERHEAD, Link

Job = Callable[[], Awaitable[None]]


class TimedDelivery:
    """Runs jobs at given event-loop times, in (time, submission) order, with one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_at = float("inf")
        self._tasks: set[asyncio.Task] = set()
        self.closed = False

    def schedule(self, when: float, job: Job) -> None:
        if self.closed:
            return
        heapq.heappush(self._heap, (when, next(self._order), job))
        if when < self._timer_at:
            self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._heap[0][0] if self._heap else float("inf")
        self._timer = self._loop.call_at(self._timer_at, self._fire) if self._heap else None

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._heap and self._heap[0][0] <= now:
            _, _, job = heapq.heappop(self._heap)
            # Tasks start in creation order and our jobs do not block before their
            # first real suspension, so delivery order is kept.
            task = self._loop.create_task(_quiet(job()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._arm()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()


async def _quiet(coro: Awaitable[None]) -> None:
    try:
        await coro
    except ConnectionError:
        pass  # the transport closed while the packet was in flight


class ImpairedTransport:
    """The impairment installed on one DTLS transport (both directions)."""

    def __init__(self, transport: RTCDtlsTransport, uplink: Optional[Link], downlink: Optional[Link]) -> None:
        self.transport = transport
        self.uplink = uplink
        self.downlink = downlink
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._up_delivery = TimedDelivery(loop)
        self._down_delivery = TimedDelivery(loop)
        if uplink is not None:
            self._wrap_uplink()
        if downlink is not None:
            self._wrap_downlink()

    def _wrap_uplink(self) -> None:
        send = self.transport._send_rtp
        link, delivery, loop = self.uplink, self._up_delivery, self._loop

        async def impaired_send_rtp(data: bytes) -> None:
            now = loop.time()
            out = link.admit(now, len(data) + WIRE_OVERHEAD)
            if out is None:
                return
            if out <= now:
                await send(data)
            else:
                delivery.schedule(out, lambda: send(data))

        self.transport._send_rtp = impaired_send_rtp

    def _wrap_downlink(self) -> None:
        handle_rtp = self.transport._handle_rtp_data
        handle_rtcp = self.transport._handle_rtcp_data
        link, delivery, loop = self.downlink, self._down_delivery, self._loop

        async def impaired_rtp(data: bytes, arrival_time_ms: int) -> None:
            now = loop.time()
            out = link.admit(now, len(data) + WIRE_OVERHEAD)
            if out is None:
                return
            if out <= now:
                await handle_rtp(data, arrival_time_ms)
            else:
                delivery.schedule(out, lambda: handle_rtp(data, clock.current_ms()))

        async def impaired_rtcp(data: bytes) -> None:
            now = loop.time()
            out = link.admit(now, len(data) + WIRE_OVERHEAD)
            if out is None:
                return
            if out <= now:
                await handle_rtcp(data)
            else:
                delivery.schedule(out, lambda: handle_rtcp(data))

        self.transport._handle_rtp_data = impaired_rtp
        self.transport._handle_rtcp_data = impaired_rtcp

    def counters(self) -> dict:
        return {"uplink": self.uplink.counters.as_dict() if self.uplink else None,
                "downlink": self.downlink.counters.as_dict() if self.downlink else None}

    def close(self) -> None:
        self._up_delivery.close()
        self._down_delivery.close()


def impair(transport: RTCDtlsTransport, uplink: Optional[Link], downlink: Optional[Link]) -> Optional[ImpairedTransport]:
    """Install links on a transport once (clean links: no wrapper at all). Returns the handle."""
    existing = getattr(transport, "_loadtest_impairment", None)
    if existing is not None:
        return existing
    if uplink is not None and uplink.spec.is_clean:
        uplink = None
    if downlink is not None and downlink.spec.is_clean:
        downlink = None
    if uplink is None and downlink is None:
        return None
    handle = ImpairedTransport(transport, uplink, downlink)
    transport._loadtest_impairment = handle
    return handle
