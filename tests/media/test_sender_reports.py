"""media/sender_reports.py on its own: the publisher's NTP <-> RTP mapping carried forward to the
moment of sending and shifted into the down-track's numbering, the counts, the RTX report while
a probe pads, and the CNAME."""

from __future__ import annotations

import random

from aiortc.rtp import RtcpPacket, RtcpSdesPacket, RtcpSrPacket

from media.rewriter import StreamRewriter
from media.rtp_clock import SenderReport
from media.sender_reports import SenderReports, carried_forward

SSRC, RTX_SSRC = 1000, 2000
NTP = 0x1234_5678_0000_0000
ONE_SECOND_NTP = 1 << 32


class Shifted:
    """A down-track numbering `offset` ahead of its source's timestamps."""

    def __init__(self, offset: int = 0, clock_rate: int = 90000) -> None:
        self.offset = offset
        self.clock_rate = clock_rate

    def map_timestamp(self, ts: int) -> int:
        return (ts + self.offset) % 2**32


def reports(cname: str | None = "cname") -> SenderReports:
    return SenderReports(ssrc=SSRC, rtx_ssrc=RTX_SSRC, cname=cname)


def sender_infos(composed) -> dict:
    return {p.ssrc: p.sender_info for p in composed.packets if isinstance(p, RtcpSrPacket)}


def test_the_mapping_is_carried_forward_by_the_time_elapsed_since_the_publisher_reported():
    report = SenderReport(ntp_timestamp=NTP, rtp_timestamp=5000, received_at=100.0)
    composed = reports().compose(report, 101.5, Shifted(), packets=0, octets=0)
    assert composed is not None
    info = sender_infos(composed)[SSRC]
    assert info.ntp_timestamp == NTP + int(1.5 * ONE_SECOND_NTP)
    assert info.rtp_timestamp == 5000 + 135000  # 1.5 s at 90 kHz: the same line as the publisher's
    assert composed.ntp_timestamp == info.ntp_timestamp  # what the subscriber's LSR will name


def test_each_report_has_an_ntp_time_of_its_own():
    report = SenderReport(ntp_timestamp=NTP, rtp_timestamp=0, received_at=100.0)
    first = reports().compose(report, 100.2, Shifted(), packets=0, octets=0)
    second = reports().compose(report, 100.7, Shifted(), packets=0, octets=0)
    assert first is not None and second is not None
    assert second.ntp_timestamp - first.ntp_timestamp == int(0.7 * ONE_SECOND_NTP) - int(0.2 * ONE_SECOND_NTP)


def test_a_publisher_report_stamped_later_than_now_is_not_carried_backwards():
    report = SenderReport(ntp_timestamp=NTP, rtp_timestamp=5000, received_at=100.0)
    assert carried_forward(report, 99.0, 90000) == (NTP, 5000)


def test_the_rtp_timestamp_is_in_the_down_tracks_numbering():
    """The rewriter's offset applies: the report names the forwarded packets' timestamps."""
    rewriter = StreamRewriter(90000, random.Random(7))
    rewriter.switch_source(first_seq=10, first_ts=1000, now=0.0)
    mapped = rewriter.map(10, 1000, now=0.0)
    assert mapped is not None
    _, forwarded_ts = mapped
    at_the_packet = SenderReport(ntp_timestamp=NTP, rtp_timestamp=1000, received_at=50.0)
    composed = reports().compose(at_the_packet, 51.0, rewriter, packets=1, octets=100)
    assert composed is not None
    assert sender_infos(composed)[SSRC].rtp_timestamp == (forwarded_ts + 90000) % 2**32


def test_the_rtp_timestamp_wraps_at_2_to_the_32():
    near_the_top = SenderReport(ntp_timestamp=NTP, rtp_timestamp=2**32 - 1000, received_at=100.0)
    composed = reports().compose(near_the_top, 100.5, Shifted(), packets=0, octets=0)
    assert composed is not None
    assert sender_infos(composed)[SSRC].rtp_timestamp == 44000  # 45000 units on, past the top
    # the rewriter's offset wraps it too
    composed = reports().compose(SenderReport(NTP, 1000, 100.0), 100.0, Shifted(offset=2**32 - 10),
                                 packets=0, octets=0)
    assert composed is not None
    assert sender_infos(composed)[SSRC].rtp_timestamp == 990


def test_the_ntp_timestamp_wraps_at_2_to_the_64():
    report = SenderReport(ntp_timestamp=2**64 - ONE_SECOND_NTP, rtp_timestamp=0, received_at=100.0)
    composed = reports().compose(report, 102.0, Shifted(), packets=0, octets=0)
    assert composed is not None
    assert composed.ntp_timestamp == ONE_SECOND_NTP


def test_nothing_to_report_before_the_publisher_sent_a_report():
    assert reports().compose(None, 100.0, Shifted(), packets=10, octets=1000) is None


def test_counts_are_what_the_media_stream_sent_in_32_bits():
    report = SenderReport(ntp_timestamp=NTP, rtp_timestamp=0, received_at=100.0)
    composed = reports().compose(report, 100.0, Shifted(), packets=2**32 + 5, octets=2**32 + 1200)
    assert composed is not None
    info = sender_infos(composed)[SSRC]
    assert (info.packet_count, info.octet_count) == (5, 1200)


def test_the_rtx_stream_is_reported_on_only_while_a_probe_pads_it():
    report = SenderReport(ntp_timestamp=NTP, rtp_timestamp=0, received_at=100.0)
    composed = reports().compose(report, 100.5, Shifted(), packets=40, octets=4000)
    assert composed is not None and set(sender_infos(composed)) == {SSRC}
    composed = reports().compose(report, 100.5, Shifted(), packets=40, octets=4000, probe=(3, 765))
    assert composed is not None
    infos = sender_infos(composed)
    assert [p.ssrc for p in composed.packets if isinstance(p, RtcpSrPacket)] == [SSRC, RTX_SSRC]
    # the same mapping on both (one line in time), each stream with its own counts
    assert (infos[RTX_SSRC].ntp_timestamp, infos[RTX_SSRC].rtp_timestamp) == \
        (infos[SSRC].ntp_timestamp, infos[SSRC].rtp_timestamp)
    assert (infos[RTX_SSRC].packet_count, infos[RTX_SSRC].octet_count) == (3, 765)
    assert (infos[SSRC].packet_count, infos[SSRC].octet_count) == (40, 4000)


def test_the_cname_goes_last_once_negotiated_and_the_whole_is_one_compound_packet():
    report = SenderReport(ntp_timestamp=NTP, rtp_timestamp=0, received_at=100.0)
    composed = reports(cname=None).compose(report, 100.0, Shifted(), packets=1, octets=1)
    assert composed is not None and not any(isinstance(p, RtcpSdesPacket) for p in composed.packets)
    composed = reports(cname="abc").compose(report, 100.0, Shifted(), packets=1, octets=1, probe=(1, 255))
    assert composed is not None
    parsed = RtcpPacket.parse(b"".join(bytes(p) for p in composed.packets))
    assert [type(p) for p in parsed] == [RtcpSrPacket, RtcpSrPacket, RtcpSdesPacket]
    sdes = parsed[-1]
    assert isinstance(sdes, RtcpSdesPacket)
    assert sdes.chunks[0].ssrc == SSRC and sdes.chunks[0].items == [(1, b"abc")]
