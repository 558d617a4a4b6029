"""A drop-oldest asyncio queue for received datagrams.

aioice queues every datagram it receives in an unbounded asyncio.Queue. If the
event loop falls behind (CPU starved), that backlog grows and every later packet
waits behind it: latency climbs without limit. For real-time media the right
policy is to keep the newest packets and drop the oldest; the receivers' loss
recovery then treats them as lost.
"""

from __future__ import annotations

import asyncio
from typing import Any


class DropOldestQueue(asyncio.Queue):
    def __init__(self, maxsize: int) -> None:
        super().__init__()  # unbounded underneath: capacity is enforced here, never by blocking
        self.capacity = maxsize
        self.dropped = 0

    def put_nowait(self, item: Any) -> None:
        while self.qsize() >= self.capacity:
            oldest = self.get_nowait()
            if oldest is None:  # an end-of-stream marker must survive; put it back first
                super().put_nowait(None)
                return
            self.dropped += 1
        super().put_nowait(item)
