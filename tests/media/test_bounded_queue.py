"""The drop-oldest queue that bounds aioice's receive backlog."""

from __future__ import annotations

import asyncio

from media.bounded_queue import DropOldestQueue


async def test_keeps_the_newest_items_and_counts_drops():
    q = DropOldestQueue(3)
    for i in range(10):
        q.put_nowait(i)
    assert q.qsize() == 3 and q.dropped == 7
    assert [q.get_nowait() for _ in range(3)] == [7, 8, 9]


async def test_end_of_stream_marker_is_never_dropped():
    q = DropOldestQueue(2)
    q.put_nowait(None)
    q.put_nowait(1)
    q.put_nowait(2)  # the marker would be the oldest; it stays, the new item goes behind it
    items = [q.get_nowait() for _ in range(q.qsize())]
    assert None in items


async def test_a_waiting_reader_is_woken():
    q = DropOldestQueue(2)
    reader = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("packet")
    assert await asyncio.wait_for(reader, 1) == "packet"
