"""Downlink FEC on the wire: FEC right after a frame, numbered in the stream, rebuilding a lost
packet byte for byte; none past the send budget; oversize FEC leaves a harmless hole."""

from __future__ import annotations

import random
import time

from aiortc.rtp import RtpPacket

from loadtest.forwarding_rig import EXTENSIONS, FEC_PTS
from media.downlink_fec import DownlinkFec
from media.packet_cache import SentPacket
from media.rtp_writer import MAX_PACKET_BYTES, RtpWriter
from media.send_budget import SendBudget
from media.seqnum import seq_add
from media.ulpfec import UlpfecDecoder
from media.video_fec import VideoFecSender

SSRC, VP8_PT = 4321, 96


class Stage:
    def __init__(self, loss: float, budget: SendBudget | None = None) -> None:
        self.writer = RtpWriter(EXTENSIONS, "1")
        self.next_seq = 1000
        self.wire: list[bytes] = []
        self.budget = budget or SendBudget()
        self.fec = DownlinkFec(VideoFecSender(FEC_PTS), writer=self.writer, ssrc=SSRC, budget=self.budget,
                               reserve=self.reserve, send=self.send)
        self.fec.update_loss(loss)

    def reserve(self, n: int) -> int:
        first, self.next_seq = self.next_seq, seq_add(self.next_seq, n)
        return first

    async def send(self, data: bytes) -> None:
        self.wire.append(data)

    async def frame(self, sizes: list[int], timestamp: int, rng: random.Random) -> list[bytes]:
        """One frame's media through the stage; returns each packet as the browser checks FEC against it."""
        protected = []
        for i, size in enumerate(sizes):
            seq = self.reserve(1)
            payload = rng.randbytes(size)
            sent = SentPacket(seq, timestamp, int(i == len(sizes) - 1), FEC_PTS.red, payload, None, time.monotonic())
            await self.fec.protect(sent, VP8_PT, payload, abs_send_time=123)
            protected.append(self.writer.write(payload_type=VP8_PT, marker=sent.marker, sequence_number=seq,
                                               timestamp=timestamp, ssrc=SSRC, payload=payload, abs_send_time=0))
        return protected


async def test_fec_follows_the_frame_numbered_after_it_and_rebuilds_a_lost_packet():
    stage = Stage(loss=0.3)
    assert stage.fec.active and stage.fec.group == 2
    media = await stage.frame([700, 900, 500, 800], timestamp=3000, rng=random.Random(1))
    assert stage.wire, "no FEC after the frame"
    fec_packets = [RtpPacket.parse(d) for d in stage.wire]
    last_media_seq = RtpPacket.parse(media[-1]).sequence_number
    assert [p.sequence_number for p in fec_packets] == [seq_add(last_media_seq, 1 + i) for i in range(len(fec_packets))]
    assert all(p.payload_type == FEC_PTS.red and p.payload[0] & 0x7F == FEC_PTS.ulpfec for p in fec_packets)
    assert stage.fec.packets_sent == len(fec_packets)

    decoder = UlpfecDecoder(SSRC)
    lost = media[2]
    for packet in media:
        if packet is not lost:
            decoder.add_media(packet)
    rebuilt = [r for p in fec_packets for r in decoder.add_fec(p.payload[1:])]
    assert lost in rebuilt


async def test_without_loss_no_fec():
    stage = Stage(loss=0.0)
    assert not stage.fec.active
    await stage.frame([600, 600], timestamp=3000, rng=random.Random(2))
    assert stage.wire == []


async def test_no_fec_past_the_send_budget_and_no_number_taken():
    budget = SendBudget()
    now = time.monotonic()
    for t, rtt in ((now - 2.0, 0.05), (now - 1.5, 0.05), (now - 1.0, 0.05), (now - 0.5, 0.3), (now, 0.3)):
        budget.estimate.note_rtt(rtt, t)
    assert budget.estimate.congested
    stage = Stage(loss=0.3, budget=budget)
    media = await stage.frame([700, 900], timestamp=3000, rng=random.Random(3))
    assert stage.wire == [] and budget.recovery_refused > 0
    assert stage.next_seq == seq_add(RtpPacket.parse(media[-1]).sequence_number, 1)


async def test_fec_over_full_size_packets_is_not_sent_and_its_number_is_a_hole():
    stage = Stage(loss=0.3)
    full = MAX_PACKET_BYTES - 40  # media already at the size limit: FEC over it (plus its headers) is larger
    media = await stage.frame([full, full], timestamp=3000, rng=random.Random(4))
    assert stage.fec.oversize > 0 and stage.fec.packets_sent == 0
    assert seq_add(RtpPacket.parse(media[-1]).sequence_number, stage.fec.oversize + 1) == stage.next_seq
