"""media/receiver_reports.py on its own: RTT from the blocks that answer our sender
reports, the downlink's own loss (the uplink's holes taken out), delivered bytes."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtcpReceiverInfo

import media.receiver_reports as module
from media.downlink_estimate import DownlinkEstimate
from media.packet_cache import PacketCache, SentPacket
from media.receiver_reports import RTP_HEADER_BYTES, ReceiverReports
from media.send_budget import PACKET_OVERHEAD_BYTES

SSRC, RTX_SSRC = 1111, 2222
NTP = 0x1234_5678_9ABC_0000  # an NTP timestamp of one of our sender reports
LSR = (NTP >> 16) & 0xFFFFFFFF


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(module.time, "time", lambda: now[0])
    monkeypatch.setattr(module.time, "monotonic", lambda: now[0])
    return now


def block(highest: int = 0, lost: int = 0, lsr: int = 0, dlsr: int = 0, ssrc: int = SSRC) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(ssrc=ssrc, fraction_lost=0, packets_lost=lost, highest_sequence=highest, jitter=0,
                            lsr=lsr, dlsr=dlsr)


def reports(video: bool = True, cache: PacketCache | None = None) -> tuple[ReceiverReports, DownlinkEstimate]:
    estimate = DownlinkEstimate()
    return ReceiverReports(ssrc=SSRC, rtx_ssrc=RTX_SSRC, video=video, cache=cache or PacketCache(1024),
                           estimate=estimate), estimate


def test_rtt_is_the_time_since_our_report_less_the_subscribers_delay(clock):
    r, estimate = reports()
    r.sender_report_sent(NTP)
    clock[0] += 0.180
    r.on_report(block(lsr=LSR, dlsr=int(0.100 * 65536)))  # it held our report 100 ms before answering
    assert r.rtt == pytest.approx(0.080, abs=1e-3)
    assert estimate.rtt_samples == 1


def test_a_repeated_answer_to_the_same_report_is_no_new_sample(clock):
    r, estimate = reports()
    r.sender_report_sent(NTP)
    clock[0] += 0.1
    r.on_report(block(lsr=LSR, dlsr=1))
    clock[0] += 1.0  # the next receiver report still names our last sender report
    r.on_report(block(lsr=LSR, dlsr=1))
    assert r.rtt == pytest.approx(0.1, abs=1e-3) and estimate.rtt_samples == 1


def test_the_rtx_streams_block_times_the_link_while_video_is_paused(clock):
    r, _ = reports()
    r.sender_report_sent(NTP)
    clock[0] += 0.05
    assert r.on_report(block(ssrc=RTX_SSRC, highest=70000, lost=500, lsr=LSR, dlsr=1)) is False
    assert r.rtt == pytest.approx(0.05, abs=1e-3) and r.reported_loss == 0.0


def test_blocks_for_other_streams_and_unanswerable_ones_are_ignored(clock):
    r, _ = reports()
    r.sender_report_sent(NTP)
    assert r.on_report(block(ssrc=9999, lsr=LSR, dlsr=1)) is False
    r.on_report(block(lsr=LSR + 1, dlsr=1))  # not a report we sent
    r.on_report(block(lsr=LSR, dlsr=0))  # no delay given: cannot be timed
    assert r.rtt is None


def test_loss_counts_the_downlinks_own_not_the_uplinks_holes(clock):
    r, _ = reports()
    newest = 100
    for seq in range(101, 201):
        if seq in range(141, 151):  # the publisher's uplink lost these ten: never sent
            continue
        r.track_unsent(newest, seq)
        newest = seq
    r.on_report(block(highest=100, lost=0))
    # the subscriber counts 10 unsent + 9 lost on the downlink in the 100 numbers since
    assert r.on_report(block(highest=200, lost=19)) is True
    assert r.reported_loss == pytest.approx(0.5 * 9 / 90)


def test_a_late_packet_filling_its_hole_counts_as_sent(clock):
    r, _ = reports()
    r.track_unsent(10, 13)  # 11 and 12 skipped
    r.track_unsent(13, 11)  # 11 arrived late and went out
    r.on_report(block(highest=10))
    r.on_report(block(highest=13, lost=1))  # only 12 missing: not the downlink's
    assert r.reported_loss == 0.0


def test_audio_reports_time_the_link_but_set_no_loss(clock):
    r, _ = reports(video=False)
    r.on_report(block(highest=0))
    assert r.on_report(block(highest=100, lost=30)) is False and r.reported_loss == 0.0


def test_delivered_bytes_are_what_was_sent_less_what_was_lost(clock):
    cache = PacketCache(1024)
    for seq in range(1, 11):
        cache.put(SentPacket(seq, 0, 0, 96, b"x" * 1000))
    r, estimate = reports(cache=cache)
    r.on_report(block(highest=0))
    r.on_report(block(highest=10, lost=2))
    per_packet = 1000 + RTP_HEADER_BYTES + PACKET_OVERHEAD_BYTES
    assert estimate.delivered_bytes == per_packet * 10 * 8 // 10


def test_forgetting_the_loss_of_a_congestion(clock):
    r, _ = reports()
    r.note_reported_loss(0.6)
    assert r.reported_loss == pytest.approx(0.3)
    r.forget_loss()
    assert r.reported_loss == 0.0
