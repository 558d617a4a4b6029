"""NACKs toward a publisher: which gaps to ask for (media/nack_generator.py), and asking.

One published track's stage. A gap is NACKed the moment it is seen (every RTT of
waiting is latency), then again on a timer at the pace the generator sets until the
packet arrives or its deadline passes; a video gap given up on is repaired with a
keyframe instead. On a lossy uplink a lost NACK costs a whole retry interval, so each
NACK goes out a few times, spaced past a short loss burst, as the uplink's loss calls for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Optional

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

from .nack_generator import NackGenerator
from .redundancy import COPY_SPACING_S
from .rtcp_io import send_rtcp


class UplinkNacks:
    def __init__(self, transport: RTCDtlsTransport, *, rtcp_ssrc: int, deadline_s: float,
                 media_ssrc: Callable[[], Optional[int]], rtt_s: Callable[[], float],
                 on_gave_up: Callable[[], None]) -> None:
        """`media_ssrc`: the publisher's stream now; `on_gave_up`: some gap can no longer be
        recovered in time (the track asks for a keyframe, for video)."""
        self._transport = transport
        self._rtcp_ssrc = rtcp_ssrc
        self._media_ssrc = media_ssrc
        self._rtt_s = rtt_s
        self._on_gave_up = on_gave_up
        self.generator = NackGenerator(deadline_s=deadline_s)
        self._timer: Optional[asyncio.TimerHandle] = None
        self.copies_sent = 0
        self.stopped = False

    def restart(self) -> None:
        """A new stream (SSRC): its numbers have nothing to do with the old ones."""
        self.generator = NackGenerator(deadline_s=self.generator.deadline_s)

    async def ask(self, gaps: list[int]) -> None:
        """NACK gaps just found, at once, and keep asking on the timer."""
        if gaps:
            await self._send(gaps)
            self._schedule()

    def close(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def stats(self) -> dict[str, int]:
        g = self.generator
        return {"nacked": g.nacked, "recovered": g.recovered, "given_up": g.given_up, "not_media": g.not_media,
                "retries_withheld": g.retries_withheld}

    async def _send(self, lost: list[int]) -> None:
        media_ssrc = self._media_ssrc()
        if media_ssrc is None or not lost:
            return
        nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self._rtcp_ssrc, media_ssrc=media_ssrc)
        # in numeric order: aiortc packs each number as a bit after the previous one and fails
        # on a smaller one, as across the wrap (65535, 0) or in a retry round's order
        nack.lost = sorted(set(lost))
        await send_rtcp(self._transport, [nack])
        loop = asyncio.get_running_loop()
        for k in range(1, self.generator.loss.copies):
            loop.call_later(k * COPY_SPACING_S, self._send_copy, nack)

    def _send_copy(self, nack: RtcpRtpfbPacket) -> None:
        if not self.stopped:
            self.copies_sent += 1
            task = asyncio.ensure_future(send_rtcp(self._transport, [nack]))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _schedule(self) -> None:
        if self._timer is not None or self.stopped:
            return
        wait = self.generator.next_wakeup(time.monotonic(), self._rtt_s())
        if wait is not None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        retry, gave_up = self.generator.due(time.monotonic(), self._rtt_s())
        if retry:
            task = asyncio.ensure_future(self._send(retry))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if gave_up:
            self._on_gave_up()
        self._schedule()
