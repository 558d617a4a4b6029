"""A down-track under downlink control: pausing, padding probes, RTT samples, recovery refused.

The down-track is driven directly and its datagrams captured before SRTP, as a
subscriber's transport would carry them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from aiortc.rtcrtpparameters import RTCRtcpParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
)

from loadtest.forwarding_rig import EXTENSIONS, RTX, VP8
from media.downtrack import PADDING_PACKET_BYTES, DownTrack
from media.rtp_clock import SenderReport
from media.send_budget import PACKET_OVERHEAD_BYTES, SendBudget
from media.seqnum import seq_diff

SSRC, RTX_SSRC = 1000, 2000


def is_rtcp(datagram: bytes) -> bool:
    return 200 <= datagram[1] <= 206


class CapturingTransport:
    """Stands in for RTCDtlsTransport: keeps every datagram as sent, before SRTP (RTCP goes the same way)."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    @property
    def sent(self) -> list[bytes]:
        """The RTP packets."""
        return [d for d in self.datagrams if not is_rtcp(d)]

    def _register_rtp_sender(self, sender, parameters) -> None: ...
    def _unregister_rtp_sender(self, sender) -> None: ...

    async def _send_rtp(self, data: bytes) -> None:
        self.datagrams.append(data)


class FakeSource:
    def __init__(self) -> None:
        self.keyframe_requests = 0
        self.downtracks: list[DownTrack] = []
        self.sender_report: Optional[SenderReport] = None

    def add_downtrack(self, downtrack: DownTrack) -> None:
        self.downtracks.append(downtrack)

    def remove_downtrack(self, downtrack: DownTrack) -> None:
        self.downtracks.remove(downtrack)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def offered_bps(self, now: float) -> float:
        return 500_000.0


async def started(codecs=(VP8, RTX), budget: Optional[SendBudget] = None) -> tuple[DownTrack, CapturingTransport,
                                                                                   FakeSource]:
    downtrack = DownTrack(subscriber_id="s", kind="video", ssrc=SSRC, rtx_ssrc=RTX_SSRC, budget=budget)
    transport = CapturingTransport()
    source = FakeSource()
    downtrack.attach(source)
    await downtrack.start(transport, RTCRtpSendParameters(codecs=list(codecs), headerExtensions=EXTENSIONS,
                                                          muxId="3", rtcp=RTCRtcpParameters(cname="x")))
    return downtrack, transport, source


def packet(seq: int, ts: int, keyframe: bool = False, size: int = 400) -> RtpPacket:
    descriptor = bytes([0x10]) + bytes([0x00 if keyframe else 0x01])
    return RtpPacket(payload_type=VP8.payloadType, marker=1, sequence_number=seq, timestamp=ts, ssrc=1234,
                     payload=descriptor + bytes(size))


async def send(downtrack: DownTrack, seq: int, ts: int, keyframe: bool = False) -> None:
    await downtrack.forward(packet(seq, ts, keyframe), VP8, keyframe, 0, time.monotonic())


def header(datagram: bytes) -> tuple[int, int, int, int]:
    """(padding bit, sequence number, timestamp, SSRC)."""
    return (datagram[0] >> 5) & 1, int.from_bytes(datagram[2:4], "big"), int.from_bytes(datagram[4:8], "big"), \
        int.from_bytes(datagram[8:12], "big")


async def test_a_paused_video_sends_nothing_and_resumes_at_a_keyframe_numbered_on() -> None:
    downtrack, transport, source = await started()
    await send(downtrack, 100, 9000, keyframe=True)
    await send(downtrack, 101, 12000)
    last_seq = header(transport.sent[-1])[1]
    downtrack.pause()
    for k in range(2, 10):
        await send(downtrack, 100 + k, 9000 + 3000 * k)
    assert len(transport.sent) == 2
    requests = source.keyframe_requests
    downtrack.resume()
    assert source.keyframe_requests == requests + 1  # it asks at once, not at the next retry
    await send(downtrack, 110, 39000)  # a delta frame: the subscriber could not decode it
    assert len(transport.sent) == 2
    await send(downtrack, 111, 42000, keyframe=True)
    assert len(transport.sent) == 3
    _, seq, _, ssrc = header(transport.sent[-1])
    assert ssrc == SSRC
    assert seq_diff(seq, last_seq) == 1  # no hole for the subscriber to NACK
    assert downtrack.summary()["paused"] is False


async def test_pausing_forgets_the_loss_the_congestion_caused() -> None:
    downtrack, _, _ = await started()
    downtrack.note_reported_loss(0.6)
    assert downtrack.reported_loss > 0
    downtrack.pause()
    assert downtrack.reported_loss == 0.0


async def test_a_pli_for_a_paused_video_does_not_reach_the_publisher() -> None:
    downtrack, _, source = await started()
    await send(downtrack, 100, 9000, keyframe=True)
    downtrack.pause()
    requests = source.keyframe_requests
    await downtrack._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=SSRC))
    assert source.keyframe_requests == requests
    assert downtrack.plis_while_paused == 1


async def test_padding_goes_out_as_rtx_padding_only_packets() -> None:
    downtrack, transport, _ = await started()
    await send(downtrack, 100, 9000, keyframe=True)
    media_ts = header(transport.sent[-1])[2]
    sent = await downtrack.send_padding(3 * PADDING_PACKET_BYTES + 100, time.monotonic())
    assert sent == 3 * PADDING_PACKET_BYTES  # whole packets only
    padding = transport.sent[1:]
    assert len(padding) == 3
    seqs = []
    for datagram in padding:
        has_padding, seq, ts, ssrc = header(datagram)
        parsed = RtpPacket.parse(datagram)
        assert has_padding and ssrc == RTX_SSRC and ts == media_ts
        assert parsed.payload == b"" and parsed.padding_size == PADDING_PACKET_BYTES
        assert parsed.payload_type == RTX.payloadType
        seqs.append(seq)
    assert [seq_diff(b, a) for a, b in zip(seqs, seqs[1:])] == [1, 1]
    assert downtrack.budget.padding.bps(time.monotonic()) > 0


async def test_padding_needs_rtx() -> None:
    downtrack, transport, _ = await started(codecs=(VP8,))
    assert not downtrack.can_probe
    assert await downtrack.send_padding(10 * PADDING_PACKET_BYTES, time.monotonic()) == 0
    assert transport.sent == []


async def test_each_sender_report_is_answered_once_with_a_true_rtt() -> None:
    """Reports carry the publisher's mapping carried forward, each with its own NTP time: a
    receiver's report names which one it answers, and repeating it gives no second sample."""
    downtrack, transport, source = await started()
    await send(downtrack, 100, 9000, keyframe=True)
    source.sender_report = SenderReport(ntp_timestamp=0x1234_5678_0000_0000, rtp_timestamp=9000,
                                        received_at=time.time() - 1.0)
    await downtrack.send_sender_report()
    await asyncio.sleep(0.01)
    await downtrack.send_sender_report()
    srs = [p for d in transport.datagrams if is_rtcp(d) for p in RtcpPacket.parse(d) if isinstance(p, RtcpSrPacket)]
    assert len(srs) == 2
    first, second = srs[0], srs[1]
    assert first.sender_info.ntp_timestamp != second.sender_info.ntp_timestamp
    # carried forward along the publisher's line: RTP advanced with the NTP time at 90 kHz
    elapsed = (second.sender_info.ntp_timestamp - first.sender_info.ntp_timestamp) / 2**32
    rtp_step = (second.sender_info.rtp_timestamp - first.sender_info.rtp_timestamp) % 2**32
    assert abs(rtp_step - elapsed * 90000) < 90
    lsr = (second.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    report = RtcpReceiverInfo(ssrc=SSRC, fraction_lost=0, packets_lost=0, highest_sequence=1, jitter=0,
                              lsr=lsr, dlsr=1)
    samples = downtrack.budget.estimate.rtt_samples
    await downtrack._handle_rtcp_packet(RtcpRrPacket(ssrc=9, reports=[report]))
    assert downtrack.rtt is not None and 0 < downtrack.rtt < 1.0
    assert downtrack.budget.estimate.rtt_samples == samples + 1
    await downtrack._handle_rtcp_packet(RtcpRrPacket(ssrc=9, reports=[report]))
    assert downtrack.budget.estimate.rtt_samples == samples + 1
    await downtrack.stop()


async def test_nacks_are_not_answered_on_a_congested_downlink() -> None:
    budget = SendBudget()
    downtrack, transport, _ = await started(budget=budget)
    for k in range(5):
        await send(downtrack, 100 + k, 9000, keyframe=(k == 0))
    first_seq = header(transport.sent[0])[1]
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=9, media_ssrc=SSRC, lost=[first_seq])
    await downtrack._handle_rtcp_packet(nack)
    assert downtrack.retransmitted == 1
    now = time.monotonic()
    budget.estimate.note_rtt(0.05, now)
    budget.estimate.note_rtt(0.5, now)  # a queue of 450 ms, in two reports in a row
    budget.estimate.note_rtt(0.5, now)
    assert budget.congested
    await downtrack._handle_rtcp_packet(nack)
    assert downtrack.retransmitted == 1
    assert budget.recovery_refused >= 1


async def test_a_narrow_downlink_holds_video_in_the_pacer() -> None:
    budget = SendBudget()
    downtrack, transport, _ = await started(budget=budget)
    budget.pacer.set_rate(80_000, time.monotonic())  # 10 kB/s: a few packets of burst
    for k in range(20):
        await send(downtrack, 100 + k, 9000 + 3000 * k, keyframe=(k == 0))
    assert 0 < len(transport.sent) < 20
    assert budget.pacer.backlog
    await budget.pacer.close()


async def test_receiver_reports_measure_what_was_delivered() -> None:
    downtrack, transport, _ = await started()
    for k in range(40):
        await send(downtrack, 100 + k, 9000 + 3000 * k, keyframe=(k == 0))
    first = header(transport.sent[0])[1]

    def report(highest: int, lost: int) -> RtcpRrPacket:
        return RtcpRrPacket(ssrc=9, reports=[RtcpReceiverInfo(ssrc=SSRC, fraction_lost=0, packets_lost=lost,
                                                              highest_sequence=highest, jitter=0, lsr=0, dlsr=0)])

    await downtrack._handle_rtcp_packet(report(first + 9, 0))
    await downtrack._handle_rtcp_packet(report(first + 39, 10))  # 30 more, 10 of them lost
    # 20 of the 30 packets, each counted with the SRTP/UDP/IP bytes around it
    per_packet = len(transport.sent[5]) + PACKET_OVERHEAD_BYTES
    assert 19 * per_packet < downtrack.budget.estimate.delivered_bytes < 21 * per_packet


async def test_a_paused_video_keeps_reporting_and_a_probe_is_timed_on_its_rtx_stream() -> None:
    """Chromium reports only on streams it still receives: while paused the down-track goes on
    sending sender reports, and while a probe's padding flows one for the RTX stream too, whose
    answer is an RTT sample like any other."""
    downtrack, transport, source = await started()
    await send(downtrack, 100, 9000, keyframe=True)
    source.sender_report = SenderReport(ntp_timestamp=0x1234_5678_0000_0000, rtp_timestamp=9000,
                                        received_at=time.time())
    downtrack.pause()

    def sender_reports() -> list[RtcpSrPacket]:
        return [p for d in transport.datagrams if is_rtcp(d) for p in RtcpPacket.parse(d)
                if isinstance(p, RtcpSrPacket)]

    await downtrack.send_sender_report()
    assert [sr.ssrc for sr in sender_reports()] == [SSRC]  # paused, no probe: the media stream's only
    await downtrack.send_padding(1000, time.monotonic())
    await downtrack.send_sender_report()
    latest = sender_reports()[-2:]
    assert {sr.ssrc for sr in latest} == {SSRC, RTX_SSRC}
    lsr = (latest[0].sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    samples = downtrack.budget.estimate.rtt_samples
    report = RtcpReceiverInfo(ssrc=RTX_SSRC, fraction_lost=0, packets_lost=0, highest_sequence=3, jitter=0,
                              lsr=lsr, dlsr=1)
    await downtrack._handle_rtcp_packet(RtcpRrPacket(ssrc=9, reports=[report]))
    assert downtrack.budget.estimate.rtt_samples == samples + 1
    await downtrack.stop()
