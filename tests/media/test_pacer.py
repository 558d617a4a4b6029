"""Pacer: the token bucket that releases a narrow downlink's packets, audio first.

`admit` is driven with explicit times; the drain runs on the real event loop (its clock is
loop.time()), at rates small enough that timing margins hold on a busy machine.
"""

from __future__ import annotations

import asyncio

import pytest

from media.pacer import AUDIO, BURST_S, MAX_WAIT_S, MIN_BURST_BYTES, RECOVERY, TICK_S, VIDEO, Pacer


class FakeTransport:
    """Records what the drain sends, with the loop time it went."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[bytes, float]] = []
        self._fail = fail_first

    async def _send_rtp(self, data: bytes) -> None:
        if self._fail:
            self._fail -= 1
            raise ConnectionError("not connected")
        self.sent.append((data, asyncio.get_running_loop().time()))

    @property
    def packets(self) -> list[bytes]:
        return [data for data, _ in self.sent]


def packet(tag: str, size: int) -> bytes:
    return tag.encode().ljust(size, b".")


async def until(condition, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.002)


def burst(rate_bps: float) -> float:
    return max(MIN_BURST_BYTES, rate_bps / 8 * BURST_S)


# --- admit (explicit times; no loop needed) -------------------------------------------


def test_idle_every_packet_goes_at_once():
    pacer = Pacer()
    for cls in (AUDIO, VIDEO, RECOVERY):
        assert all(pacer.admit(1200, cls, 1.0) for _ in range(1000))
    assert not pacer.backlog
    assert pacer.queued == 0


def test_a_new_rate_starts_with_a_full_burst_then_refills_at_the_rate():
    pacer = Pacer()
    rate = 400_000  # 50 bytes per ms
    pacer.set_rate(rate, 10.0)
    allowance = burst(rate)
    sent = 0
    while pacer.admit(500, VIDEO, 10.0):
        sent += 500
    assert allowance - 500 < sent <= allowance
    assert not pacer.admit(500, VIDEO, 10.0 + 0.001)  # 50 bytes came back: not enough
    assert pacer.admit(500, VIDEO, 10.0 + 0.0105)  # 500 bytes' worth of time later


def test_tokens_never_pile_up_beyond_a_burst():
    pacer = Pacer()
    rate = 800_000
    pacer.set_rate(rate, 0.0)
    sent = 0
    while pacer.admit(100, VIDEO, 60.0):  # a minute idle
        sent += 100
    assert sent <= burst(rate)


def test_audio_always_goes_and_only_uses_up_the_rate():
    pacer = Pacer()
    rate = 400_000
    pacer.set_rate(rate, 5.0)
    assert all(pacer.admit(200, AUDIO, 5.0) for _ in range(200))  # far beyond the rate
    assert not pacer.admit(100, VIDEO, 5.0)
    assert not pacer.admit(100, RECOVERY, 5.0)
    # the debt is bounded by one burst: video goes again after it is paid back
    payback = (burst(rate) + 100) / (rate / 8)
    assert not pacer.admit(100, VIDEO, 5.0 + payback * 0.9)
    assert pacer.admit(100, VIDEO, 5.0 + payback * 1.1)


def test_switching_back_to_idle_stops_pacing():
    pacer = Pacer()
    pacer.set_rate(100_000, 1.0)
    while pacer.admit(1000, VIDEO, 1.0):
        pass
    pacer.set_rate(None, 1.0)
    assert pacer.rate_bps is None
    assert pacer.admit(1000, VIDEO, 1.0)
    pacer.set_rate(100_000, 2.0)  # pacing again: a fresh burst
    assert pacer.admit(1000, VIDEO, 2.0)


def test_changing_the_rate_keeps_the_tokens_left():
    pacer = Pacer()
    pacer.set_rate(400_000, 1.0)
    while pacer.admit(500, VIDEO, 1.0):
        pass
    pacer.set_rate(8_000_000, 1.0)  # no fresh burst on a rate change: only time refills
    assert not pacer.admit(500, VIDEO, 1.0)
    assert pacer.admit(500, VIDEO, 1.0 + 0.001)  # at the new rate, 1000 bytes per ms


def test_summary_when_idle():
    pacer = Pacer()
    assert pacer.summary(1.0) == {"pacing_kbps": None, "queued": 0, "expired": [0, 0, 0], "video_wait_ms": 0}


# --- the queues (enqueue starts a drain task: these need the loop) ---------------------


async def test_video_waits_behind_video_already_waiting():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(80_000, now)
    try:
        pacer.enqueue(transport, packet("v1", 100), VIDEO, now)
        assert pacer.backlog
        assert not pacer.admit(100, VIDEO, now)  # tokens to spare, but it would overtake v1
        assert pacer.admit(100, AUDIO, now)  # audio overtakes anything
    finally:
        await pacer.close()


async def test_recovery_waits_behind_video_and_recovery_but_video_overtakes_recovery():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(80_000, now)
    try:
        pacer.enqueue(transport, packet("r1", 100), RECOVERY, now)
        assert not pacer.admit(100, RECOVERY, now)
        assert pacer.admit(100, VIDEO, now)  # tokens to spare and no video waiting
        pacer.enqueue(transport, packet("v1", 100), VIDEO, now)
        assert not pacer.admit(100, RECOVERY, now)
        assert not pacer.admit(100, VIDEO, now)
    finally:
        await pacer.close()


async def test_waiting_time_is_that_of_the_oldest_packet():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    now = loop.time()
    pacer.set_rate(80_000, now)
    try:
        assert pacer.waiting_s(VIDEO, now) == 0.0
        pacer.enqueue(FakeTransport(), packet("v1", 100), VIDEO, now - 0.3)
        pacer.enqueue(FakeTransport(), packet("v2", 100), VIDEO, now - 0.1)
        assert pacer.waiting_s(VIDEO, now) == pytest.approx(0.3)
        assert pacer.waiting_s(RECOVERY, now) == 0.0
        summary = pacer.summary(now)
        assert summary["pacing_kbps"] == 80 and summary["queued"] == 2 and summary["video_wait_ms"] == 300
    finally:
        await pacer.close()


async def test_the_drain_releases_no_faster_than_the_rate():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    rate = 800_000  # 100 bytes per ms: a 1000-byte packet per 10 ms
    start = loop.time()
    pacer.set_rate(rate, start)
    size, count = 1000, 12
    for k in range(count):
        pacer.enqueue(transport, packet(f"v{k}", size), VIDEO, start)
    assert pacer.queued == count
    await until(lambda: len(transport.sent) == count)
    assert transport.packets == [packet(f"v{k}", size) for k in range(count)]  # in order
    for k, (_, at) in enumerate(transport.sent):
        released = (k + 1) * size
        assert released <= burst(rate) + rate / 8 * (at - start) + 1, k  # never ahead of the rate
    elapsed = transport.sent[-1][1] - start
    assert elapsed >= (count * size - burst(rate)) / (rate / 8) - TICK_S
    assert elapsed < 1.5  # about 0.1 s on a quiet machine
    assert not pacer.backlog
    assert pacer.expired == [0, 0, 0]
    await pacer.close()


async def test_the_drain_releases_video_before_recovery_whatever_came_first():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(400_000, now)
    while pacer.admit(500, VIDEO, now):  # spend the burst
        pass
    pacer.enqueue(transport, packet("r1", 500), RECOVERY, now)
    pacer.enqueue(transport, packet("r2", 500), RECOVERY, now)
    pacer.enqueue(transport, packet("v1", 500), VIDEO, now)
    pacer.enqueue(transport, packet("v2", 500), VIDEO, now)
    await until(lambda: len(transport.sent) == 4)
    assert transport.packets == [packet(t, 500) for t in ("v1", "v2", "r1", "r2")]
    await pacer.close()


async def test_a_video_packet_the_rate_cannot_cover_holds_back_smaller_recovery():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    rate = 80_000  # 10 bytes per ms
    pacer.set_rate(rate, now)
    while pacer.admit(100, VIDEO, now):
        pass
    pacer.enqueue(transport, packet("v1", 1200), VIDEO, now)  # about 0.12 s of tokens away
    pacer.enqueue(transport, packet("r1", 60), RECOVERY, now)  # would fit in 6 ms
    try:
        await asyncio.sleep(0.04)
        assert transport.sent == []  # the small recovery packet did not jump the queue
        await until(lambda: len(transport.sent) == 2)
        assert transport.packets == [packet("v1", 1200), packet("r1", 60)]
        assert transport.sent[0][1] - now >= 1200 / (rate / 8) - 2 * TICK_S
    finally:
        await pacer.close()


async def test_packets_waiting_past_their_use_are_dropped_and_counted():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(8_000_000, now)
    pacer.enqueue(transport, packet("old-v", 100), VIDEO, now - MAX_WAIT_S[VIDEO] - 0.1)
    pacer.enqueue(transport, packet("v", 100), VIDEO, now)
    pacer.enqueue(transport, packet("old-r1", 100), RECOVERY, now - MAX_WAIT_S[RECOVERY] - 0.1)
    pacer.enqueue(transport, packet("old-r2", 100), RECOVERY, now - MAX_WAIT_S[RECOVERY] - 0.05)
    pacer.enqueue(transport, packet("r", 100), RECOVERY, now)
    await until(lambda: not pacer.backlog)
    assert transport.packets == [packet("v", 100), packet("r", 100)]
    assert pacer.expired == [0, 1, 2]
    assert pacer.queued == 5
    assert pacer.summary(loop.time())["expired"] == [0, 1, 2]
    await pacer.close()


async def test_a_recovery_packet_waits_less_long_than_video():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(8_000_000, now)
    waited = (MAX_WAIT_S[RECOVERY] + MAX_WAIT_S[VIDEO]) / 2  # too long for recovery, fine for video
    pacer.enqueue(transport, packet("v", 100), VIDEO, now - waited)
    pacer.enqueue(transport, packet("r", 100), RECOVERY, now - waited)
    await until(lambda: not pacer.backlog)
    assert transport.packets == [packet("v", 100)]
    assert pacer.expired == [0, 0, 1]
    await pacer.close()


async def test_going_idle_releases_everything_waiting_at_once_in_priority_order():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(8_000, now)  # a packet a second: nothing more goes while paced
    while pacer.admit(100, VIDEO, now):
        pass
    pacer.enqueue(transport, packet("r1", 1000), RECOVERY, now)
    pacer.enqueue(transport, packet("v1", 1000), VIDEO, now)
    pacer.enqueue(transport, packet("r2", 1000), RECOVERY, now)
    pacer.enqueue(transport, packet("v2", 1000), VIDEO, now)
    await asyncio.sleep(0.02)
    assert transport.sent == []
    pacer.set_rate(None, loop.time())
    await until(lambda: len(transport.sent) == 4, timeout=1.0)
    assert transport.packets == [packet(t, 1000) for t in ("v1", "v2", "r1", "r2")]
    await pacer.close()


async def test_audio_is_never_held_even_if_queued():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(8_000_000, now)
    pacer.enqueue(transport, packet("a1", 100), AUDIO, now - 0.001)  # late audio is worth nothing
    pacer.enqueue(transport, packet("v1", 100), VIDEO, now)
    await until(lambda: not pacer.backlog)
    assert transport.packets == [packet("v1", 100)]
    assert pacer.expired == [1, 0, 0]
    await pacer.close()


async def test_the_drain_restarts_after_it_emptied():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    pacer.set_rate(8_000_000, loop.time())
    pacer.enqueue(transport, packet("v1", 100), VIDEO, loop.time())
    await until(lambda: len(transport.sent) == 1)
    await asyncio.sleep(3 * TICK_S)  # the drain has ended with nothing left
    pacer.enqueue(transport, packet("v2", 100), VIDEO, loop.time())
    await until(lambda: len(transport.sent) == 2)
    assert transport.packets == [packet("v1", 100), packet("v2", 100)]
    await pacer.close()


async def test_a_send_that_fails_does_not_stop_the_drain():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport(fail_first=1)
    pacer.set_rate(8_000_000, loop.time())
    pacer.enqueue(transport, packet("v1", 100), VIDEO, loop.time())
    pacer.enqueue(transport, packet("v2", 100), VIDEO, loop.time())
    await until(lambda: not pacer.backlog)
    await until(lambda: len(transport.sent) == 1)
    assert transport.packets == [packet("v2", 100)]
    await pacer.close()


async def test_close_drops_what_waits_and_stops_the_drain():
    loop = asyncio.get_running_loop()
    pacer = Pacer()
    transport = FakeTransport()
    now = loop.time()
    pacer.set_rate(8_000, now)
    while pacer.admit(100, VIDEO, now):
        pass
    for k in range(3):
        pacer.enqueue(transport, packet(f"v{k}", 1000), VIDEO, now)
    await pacer.close()
    assert not pacer.backlog
    pacer.set_rate(None, loop.time())
    await asyncio.sleep(3 * TICK_S)
    assert transport.sent == []
