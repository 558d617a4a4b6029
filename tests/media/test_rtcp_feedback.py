"""RTCP parsing with transport-cc feedback kept whole (media/rtcp_feedback.py)."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtcpPsfbPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket

from media.rtcp_feedback import RtcpWithTransportFeedback, TransportFeedbackPacket
from media.twcc_feedback import build_fci, build_rtcp, parse_fci

RR = bytes(RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(ssrc=2, fraction_lost=0, packets_lost=0,
                                                           highest_sequence=10, jitter=0, lsr=0, dlsr=0)]))
NACK = bytes(RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=[5, 7]))


def test_transport_feedback_is_kept_whole_beside_other_messages():
    fci = build_fci(65534, [1_000_000, None, 1_000_250], feedback_count=3)
    data = RR + build_rtcp(sender_ssrc=1, media_ssrc=9, feedback=fci) + NACK
    rr, feedback, nack = RtcpWithTransportFeedback.parse(data)
    assert isinstance(rr, RtcpRrPacket) and rr.reports[0].highest_sequence == 10
    assert isinstance(feedback, TransportFeedbackPacket) and isinstance(feedback, RtcpRtpfbPacket)
    assert (feedback.fmt, feedback.ssrc, feedback.media_ssrc) == (15, 1, 9)
    decoded = parse_fci(feedback.fci)
    assert decoded.base_sequence == 65534 and decoded.arrivals == (1_000_000, None, 1_000_250)
    assert isinstance(nack, RtcpRtpfbPacket) and nack.lost == [5, 7]
    assert bytes(feedback) == build_rtcp(sender_ssrc=1, media_ssrc=9, feedback=fci)


def test_without_transport_feedback_it_is_aiortcs_parse():
    remb = bytes(RtcpPsfbPacket(fmt=15, ssrc=1, media_ssrc=0, fci=b"REMB\x01\x00\x10\x00\x00\x00\x00\x02"))
    assert [type(p) for p in RtcpWithTransportFeedback.parse(RR + remb)] == [RtcpRrPacket, RtcpPsfbPacket]


@pytest.mark.parametrize("data", [
    build_rtcp(1, 2, build_fci(0, [0], 0))[:-4],  # truncated
    bytes([0x8F, 205, 0, 1, 0, 0, 0, 1]),  # shorter than its two SSRCs
    bytes([0xAF, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 9]),  # padding that claims more than the packet
    RR + bytes([0x4F, 205, 0, 0]),  # wrong version
])
def test_malformed_compounds_raise_value_error(data):
    with pytest.raises(ValueError):
        RtcpWithTransportFeedback.parse(data)
