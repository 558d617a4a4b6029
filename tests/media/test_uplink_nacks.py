"""NACKs toward a publisher: asked at once, retried on the generator's timer until the packet
comes or its deadline passes (then a keyframe instead), copied on a lossy uplink, silent once
closed. RTCP is read back from the wire as the publisher would parse it."""

from __future__ import annotations

import asyncio
import time

from aiortc.rtp import RtcpPacket, RtcpRtpfbPacket

from media.redundancy import COPY_SPACING_S
from media.uplink_nacks import UplinkNacks
from tests.support.wire import CapturingTransport

MEDIA_SSRC, RTCP_SSRC = 1111, 2222


def nacks_sent(wire: CapturingTransport) -> list[list[int]]:
    """Each NACK on the wire as the publisher parses it: the sequence numbers it asks for."""
    out = []
    for data in wire.sent:
        for packet in RtcpPacket.parse(data):
            assert isinstance(packet, RtcpRtpfbPacket) and packet.media_ssrc == MEDIA_SSRC
            assert packet.ssrc == RTCP_SSRC
            out.append(sorted(packet.lost))
    return out


def stage(deadline_s: float = 1.0, ssrc: int | None = MEDIA_SSRC) -> tuple[UplinkNacks, CapturingTransport, list[str]]:
    transport = CapturingTransport()
    gave_up: list[str] = []
    nacks = UplinkNacks(transport, rtcp_ssrc=RTCP_SSRC, deadline_s=deadline_s,
                        media_ssrc=lambda: ssrc, rtt_s=lambda: 0.02, on_gave_up=lambda: gave_up.append("keyframe"))
    return nacks, transport, gave_up


async def gap(nacks: UplinkNacks, *seqs: int) -> list[int]:
    """Packets arrive with `seqs` missing in between; what was asked at once."""
    now = time.monotonic()
    nacks.generator.on_packet(min(seqs) - 1, now)
    found = nacks.generator.on_packet(max(seqs) + 1, now)
    await nacks.ask(found)
    return found


async def test_a_gap_is_asked_for_at_once_and_again_until_the_packet_comes():
    nacks, wire, gave_up = stage()
    assert await gap(nacks, 101, 102) == [101, 102]
    assert nacks_sent(wire) == [[101, 102]]
    await asyncio.sleep(0.15)
    asked = len(nacks_sent(wire))
    assert asked >= 3 and all(n == [101, 102] for n in nacks_sent(wire))  # retried on the timer
    nacks.generator.on_packet(101, time.monotonic())
    nacks.generator.on_packet(102, time.monotonic())
    await asyncio.sleep(0.1)
    assert len(nacks_sent(wire)) <= asked + 1  # (a retry may have been due as they came)
    assert gave_up == [] and nacks.stats["recovered"] == 2
    nacks.close()


async def test_past_its_deadline_a_gap_is_given_up_and_a_keyframe_asked_instead():
    nacks, wire, gave_up = stage(deadline_s=0.15)
    await gap(nacks, 500)
    await asyncio.sleep(0.35)
    assert gave_up == ["keyframe"] and nacks.stats["given_up"] == 1
    count = len(nacks_sent(wire))
    await asyncio.sleep(0.1)
    assert len(nacks_sent(wire)) == count  # nothing left to ask for
    nacks.close()


async def test_on_a_lossy_uplink_each_nack_goes_out_more_than_once_spaced():
    nacks, wire, _ = stage(deadline_s=0.01)  # no retries in the way: only the copies
    nacks.generator.loss.add(30, 100)
    nacks.generator.loss.add(30, 100)
    copies = nacks.generator.loss.copies
    assert copies > 1
    await gap(nacks, 7)
    await asyncio.sleep(copies * COPY_SPACING_S + 0.05)
    times = wire.times
    assert nacks_sent(wire).count([7]) >= copies and nacks.copies_sent == copies - 1
    assert times[1] - times[0] >= COPY_SPACING_S * 0.8
    nacks.close()


async def test_nothing_goes_out_once_closed_or_before_the_stream_is_known():
    nacks, wire, _ = stage(ssrc=None)
    await gap(nacks, 10)
    assert wire.sent == []
    nacks.close()

    nacks, wire, gave_up = stage()
    nacks.generator.loss.add(30, 100)
    await gap(nacks, 20)
    nacks.close()
    sent = len(wire.sent)
    await asyncio.sleep(0.2)
    assert len(wire.sent) == sent and gave_up == []  # no retry, no copy, no keyframe after close


async def test_a_new_stream_forgets_the_old_ones_gaps():
    nacks, wire, _ = stage()
    await gap(nacks, 300)
    nacks.restart()
    assert nacks.generator.next_wakeup(time.monotonic(), 0.02) is None
    assert nacks.stats["nacked"] == 0
    nacks.close()
