"""Extra copies on a lossy downlink: spaced, within the send budget, none on a congested link."""

from __future__ import annotations

import asyncio
import time

from media.recovery_copies import RecoveryCopies
from media.redundancy import COPY_SPACING_S
from media.send_budget import SendBudget

BASE, QUEUED = 0.05, 0.30  # path RTT, and RTT with a queue building


async def collect(copies: RecoveryCopies, wire: list[tuple[float, bytes]], data: bytes, n: int) -> None:
    copies.after(data, n)
    await asyncio.sleep(n * COPY_SPACING_S + 0.05)


def stage() -> tuple[RecoveryCopies, SendBudget, list[tuple[float, bytes]]]:
    wire: list[tuple[float, bytes]] = []

    async def send(data: bytes) -> None:
        wire.append((time.monotonic(), data))

    budget = SendBudget()
    return RecoveryCopies(budget, send), budget, wire


async def test_copies_follow_the_packet_spaced_past_a_short_burst_and_count_as_recovery():
    copies, budget, wire = stage()
    start = time.monotonic()
    await collect(copies, wire, b"x" * 100, 3)
    assert [data for _, data in wire] == [b"x" * 100] * 2  # the packet itself went out before: two more
    assert wire[0][0] - start >= COPY_SPACING_S * 0.9
    assert wire[1][0] - wire[0][0] >= COPY_SPACING_S * 0.5
    assert copies.sent == 2
    assert budget.recovery.bps(time.monotonic()) > 0


async def test_one_copy_means_none_extra():
    copies, _, wire = stage()
    await collect(copies, wire, b"y", 1)
    assert wire == [] and copies.sent == 0


async def test_no_copies_on_a_congested_link():
    copies, budget, wire = stage()
    now = time.monotonic()
    for t in (now - 2.0, now - 1.5, now - 1.0):
        budget.estimate.note_rtt(BASE, t)
    for t in (now - 0.5, now):
        budget.estimate.note_rtt(QUEUED, t)
    assert budget.congested
    await collect(copies, wire, b"z", 3)
    assert wire == [] and copies.sent == 0


async def test_a_stopped_down_track_sends_no_copy_already_scheduled():
    copies, _, wire = stage()
    copies.after(b"w", 3)
    copies.stopped = True
    await asyncio.sleep(3 * COPY_SPACING_S + 0.05)
    assert wire == [] and copies.sent == 0
