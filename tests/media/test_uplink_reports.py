"""Receiver reports and REMB toward a publisher, read back as the publisher parses them:
first transmissions only, loss since the last report, the answer to its sender report."""

from __future__ import annotations

import time

from aiortc.rtp import RtcpPacket, RtcpPsfbPacket, RtcpRrPacket, RtpPacket, unpack_remb_fci

from media.rtp_clock import SenderReport
from media.uplink_reports import UplinkReports
from tests.support.wire import CapturingTransport

MEDIA_SSRC, RTCP_SSRC = 5555, 6666


def packet(seq: int) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, ssrc=MEDIA_SSRC, payload=b"x")


async def test_a_report_counts_the_uplinks_loss_and_answers_the_senders_report():
    transport = CapturingTransport()
    reports = UplinkReports(transport, RTCP_SSRC)
    assert await reports.send_report(MEDIA_SSRC, None) is False and transport.sent == []  # nothing counted yet
    for seq in [*range(100, 110), *range(112, 120)]:  # two lost
        reports.count(packet(seq), 90000)
    now = time.time()
    sr = SenderReport(ntp_timestamp=0x1234_5678_9ABC_DEF0, rtp_timestamp=0, received_at=now - 0.5)
    rr = reports.report(MEDIA_SSRC, sr, now_wall=now)
    assert isinstance(rr, RtcpRrPacket) and rr.ssrc == RTCP_SSRC
    (info,) = rr.reports
    assert (info.ssrc, info.packets_lost, info.highest_sequence) == (MEDIA_SSRC, 2, 119)
    assert info.fraction_lost == 2 * 256 // 20  # 2 of 20 expected, in 1/256
    assert info.lsr == 0x5678_9ABC and abs(info.dlsr - 0.5 * 65536) < 2
    assert reports.lost == 2

    assert await reports.send_report(MEDIA_SSRC, None)
    (parsed,) = RtcpPacket.parse(transport.sent[-1])
    assert isinstance(parsed, RtcpRrPacket) and parsed.reports[0].fraction_lost == 0  # none lost since the last
    assert parsed.reports[0].lsr == 0 and parsed.reports[0].dlsr == 0  # no sender report to answer


async def test_a_new_stream_starts_counting_afresh():
    reports = UplinkReports(CapturingTransport(), RTCP_SSRC)
    for seq in (1, 2, 5):
        reports.count(packet(seq), 90000)
    assert reports.lost == 2
    reports.restart()
    assert reports.lost == 0 and reports.report(MEDIA_SSRC, None) is None


async def test_remb_names_the_publishers_stream_and_the_bitrate_asked():
    transport = CapturingTransport()
    reports = UplinkReports(transport, RTCP_SSRC)
    assert not await reports.send_remb(None, MEDIA_SSRC) and not await reports.send_remb(500_000, None)
    assert await reports.send_remb(800_000, MEDIA_SSRC)
    (remb,) = RtcpPacket.parse(transport.sent[-1])
    assert isinstance(remb, RtcpPsfbPacket) and remb.ssrc == RTCP_SSRC
    bitrate, ssrcs = unpack_remb_fci(remb.fci)
    assert ssrcs == [MEDIA_SSRC] and abs(bitrate - 800_000) / 800_000 < 0.01
