"""Applies loadtest.impairment links to a client peer connection's DTLS transport.

Uplink: `RTCDtlsTransport._send_rtp` (RTP and RTCP, after aiortc decided to
send, before SRTP protects it): a delayed packet is protected when it leaves
the link, so SRTP's packet index stays in order. Downlink: the datagrams the
ICE transport hands to the DTLS transport, before SRTP unprotects them, as on a
real network: each copy of a packet the server sends twice is lost or delivered
on its own (on the clear side, SRTP's replay check would drop every copy after
the first before the link decided, and duplicate sends could never help). DTLS
and other non-SRTP datagrams, ICE checks and the signalling WebSocket are not
impaired.

Packets that leave a link later than now are delivered by one timer per
direction, in (time, arrival) order; aiortc stamps a downlink packet's
`arrival_time_ms` (used by its bandwidth estimator) when it leaves the link.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Optional

from aiortc.rtcdtlstransport import RTCDtlsTransport

from loadtest.impairment import DATAGRAM_OVERHEAD, WIRE_OVERHEAD, Link

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
        self._pump: Optional[asyncio.Task] = None
        if uplink is not None:
            self._wrap_uplink(uplink)
        if downlink is not None:
            self._wrap_downlink(downlink)

    def _wrap_uplink(self, link: Link) -> None:
        send = self.transport._send_rtp
        delivery, loop = self._up_delivery, self._loop

        async def impaired_send_rtp(data: bytes) -> None:
            now = loop.time()
            out = link.admit(now, len(data) + WIRE_OVERHEAD)
            if out is None:
                return
            if out <= now:
                await send(data)
            else:
                delivery.schedule(out, lambda: send(data))

        # deliberately replaces aiortc's internal method on this one transport
        self.transport._send_rtp = impaired_send_rtp  # type: ignore[method-assign]

    def _wrap_downlink(self, link: Link) -> None:
        ice = self.transport.transport
        recv = ice._recv
        delivery, loop = self._down_delivery, self._loop
        arrived: asyncio.Queue = asyncio.Queue()

        async def deliver(data: bytes) -> None:
            arrived.put_nowait(data)

        async def pump() -> None:
            while True:
                try:
                    data = await recv()
                except BaseException as exc:  # closed: hand the end to the reader
                    arrived.put_nowait(exc)
                    return
                if not data or not 127 < data[0] < 192:
                    arrived.put_nowait(data)  # DTLS and the like: not impaired
                    continue
                now = loop.time()
                out = link.admit(now, len(data) + DATAGRAM_OVERHEAD)
                if out is None:
                    continue
                if out <= now:
                    arrived.put_nowait(data)
                else:
                    delivery.schedule(out, functools.partial(deliver, data))

        async def impaired_recv() -> bytes:
            if self._pump is None:  # read only once the DTLS transport reads: ICE is up by then
                self._pump = loop.create_task(pump())
            item = await arrived.get()
            if isinstance(item, BaseException):
                arrived.put_nowait(item)  # every later read ends the same way
                raise item
            return item

        ice._recv = impaired_recv

    def counters(self) -> dict:
        return {"uplink": self.uplink.counters.as_dict() if self.uplink else None,
                "downlink": self.downlink.counters.as_dict() if self.downlink else None}

    def close(self) -> None:
        self._up_delivery.close()
        self._down_delivery.close()
        if self._pump is not None:
            self._pump.cancel()


def impair(transport: RTCDtlsTransport, uplink: Optional[Link],
           downlink: Optional[Link]) -> Optional[ImpairedTransport]:
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
    setattr(transport, "_loadtest_impairment", handle)  # our tag on aiortc's object, read back above
    return handle
