"""A down-track sending video FEC: what goes on the wire, read back as a browser reads it.

The down-track is driven directly with a seeded VP8-like stream (upstream losses
recovered late included) and its datagrams captured before SRTP. Checked: media
goes out RED-wrapped with its numbering intact, FEC only between frames, every
FEC payload rebuilds a dropped media packet byte for byte (media/ulpfec.py's
decoder applies libwebrtc's rules), late packets fill their own gaps, and NACKs
for FEC numbers are never answered.
"""

from __future__ import annotations

import random

from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtcrtpparameters import RTCRtcpParameters, RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket, RtpPacket

from loadtest.forwarding_rig import EXTENSIONS, RTX, VP8
from media import downtrack as downtrack_module
from media.downtrack import DownTrack
from media.rtp_writer import MAX_PACKET_BYTES
from media.sdp_transport_cc import transport_cc_extension
from media.seqnum import seq_diff
from media.ulpfec import UlpfecDecoder, zero_extensions
from tests.support.wire import CapturingTransport

RED = RTCRtpCodecParameters(mimeType="video/red", clockRate=90000, payloadType=116)
ULPFEC = RTCRtpCodecParameters(mimeType="video/ulpfec", clockRate=90000, payloadType=118)
RTX_RED = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=117, parameters={"apt": 116})
ABS_SEND_TIME_ID = 3
SSRC, RTX_SSRC = 1000, 2000


async def started_downtrack(codecs: list[RTCRtpCodecParameters]) -> tuple[DownTrack, CapturingTransport]:
    downtrack = DownTrack(subscriber_id="s", kind="video", ssrc=SSRC, rtx_ssrc=RTX_SSRC)
    transport = CapturingTransport()
    await downtrack.start(transport, RTCRtpSendParameters(codecs=codecs, headerExtensions=EXTENSIONS, muxId="3",
                                                          rtcp=RTCRtcpParameters(cname="x")))
    return downtrack, transport


def source_stream(frames: int, seed: int) -> list[RtpPacket]:
    """VP8-shaped packets: 2-8 per frame, random payloads, the first frame a keyframe."""
    rng = random.Random(seed)
    packets, seq = [], 60_000  # the source wraps during the stream
    for frame in range(frames):
        count = rng.randint(2, 8)
        for i in range(count):
            # VP8 descriptor: S bit on a frame's first packet; keyframe bit clear in the first payload byte
            descriptor = bytes([0x10 if i == 0 else 0x00])
            body = bytes([0x00 if frame == 0 else 0x01]) if i == 0 else b""
            p = RtpPacket(payload_type=VP8.payloadType, marker=int(i == count - 1), sequence_number=seq % 65536,
                          timestamp=(frame * 3000) % 2**32, ssrc=1234,
                          payload=descriptor + body + rng.randbytes(rng.randint(50, 1100)))
            packets.append(p)
            seq += 1
    return packets


def unwrapped(datagram: bytes) -> bytes:
    """A RED media packet as a browser checks FEC against it: media PT, no RED byte, abs-send-time zeroed."""
    header_end = 12 + 4 * (datagram[0] & 0x0F)
    if datagram[0] & 0x10:
        header_end += 4 + 4 * int.from_bytes(datagram[header_end + 2:header_end + 4], "big")
    plain = bytes([datagram[0], (datagram[1] & 0x80) | datagram[header_end]]) + datagram[2:header_end] \
        + datagram[header_end + 1:]
    return zero_extensions(plain, {ABS_SEND_TIME_ID: 0})


def payload_of(datagram: bytes) -> bytes:
    header_end = 12 + 4 * (datagram[0] & 0x0F)
    if datagram[0] & 0x10:
        header_end += 4 + 4 * int.from_bytes(datagram[header_end + 2:header_end + 4], "big")
    return datagram[header_end:]


def seq_of(datagram: bytes) -> int:
    return int.from_bytes(datagram[2:4], "big")


async def test_fec_on_the_wire_rebuilds_what_was_dropped_and_late_packets_fill_their_gaps():
    downtrack, transport = await started_downtrack([VP8, RTX, RED, ULPFEC, RTX_RED])
    downtrack.note_reported_loss(0.3)
    downtrack.note_reported_loss(0.3)
    assert downtrack.summary()["fec_group"] == 2

    stream = source_stream(frames=600, seed=5)  # ~3000 packets, across the source's wrap
    rng = random.Random(9)
    held: list[RtpPacket] = []  # "lost upstream", forwarded later as recovered
    for n, packet in enumerate(stream):
        if n > 10 and rng.random() < 0.03:
            held.append(packet)
            continue
        await downtrack.forward(packet, VP8, keyframe_start=n == 0, abs_send_time=n & 0xFFFFFF, now=n / 100)
        if held and rng.random() < 0.3:
            await downtrack.forward(held.pop(0), VP8, keyframe_start=False, abs_send_time=0, now=n / 100, late=True)
    for packet in held:
        await downtrack.forward(packet, VP8, keyframe_start=False, abs_send_time=0, now=7.0, late=True)

    media = [d for d in transport.sent if d[1] & 0x7F == RED.payloadType and payload_of(d)[0] == VP8.payloadType]
    fec = [d for d in transport.sent if d[1] & 0x7F == RED.payloadType and payload_of(d)[0] == ULPFEC.payloadType]
    assert len(media) == len(stream) and len(transport.sent) == len(media) + len(fec)
    assert len(fec) > len(stream) * 0.4

    # every source packet kept its bytes and its place: sorted by down-track number, media
    # comes out in source order, and the numbers left over are exactly the FEC's
    by_seq = {}
    base = seq_of(transport.sent[0])
    for d in transport.sent:
        by_seq[seq_diff(seq_of(d), base)] = d
    assert len(by_seq) == len(transport.sent)  # no number used twice
    assert sorted(by_seq) == list(range(len(by_seq)))  # and none skipped
    in_order_media = [by_seq[k] for k in sorted(by_seq) if by_seq[k] in media]
    assert [payload_of(d)[1:] for d in in_order_media] == [p.payload for p in stream]
    # FEC only right after a frame's last packet (or after other FEC)
    for k in sorted(by_seq):
        if by_seq[k] in fec:
            assert by_seq[k - 1][1] & 0x80 or by_seq[k - 1] in fec, k

    # a receiver that lost some media (seeded) rebuilds it from the FEC, byte for byte
    lose = random.Random(3)
    decoder = UlpfecDecoder(SSRC, window=512)
    dropped: dict[int, bytes] = {}
    rebuilt: dict[int, bytes] = {}
    for d in transport.sent:  # in send order, as a receiver gets them
        if d in fec:
            for packet in decoder.add_fec(payload_of(d)[1:]):
                rebuilt[seq_of(packet)] = packet
        elif lose.random() < 0.1:
            dropped[seq_of(d)] = unwrapped(d)
        else:
            for packet in decoder.add_media(unwrapped(d)):
                rebuilt[seq_of(packet)] = packet
    assert len(dropped) > 100 and len(rebuilt) > len(dropped) * 0.5, (len(dropped), len(rebuilt))
    assert all(dropped[s] == packet for s, packet in rebuilt.items())

    # a NACK for an FEC number finds nothing; one for media is answered over RTX-for-red
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=SSRC)
    nack.lost = [seq_of(fec[-1])]
    sent_before = len(transport.sent)
    await downtrack._handle_rtcp_packet(nack)
    assert len(transport.sent) == sent_before
    nack.lost = [seq_of(media[-1])]
    await downtrack._handle_rtcp_packet(nack)
    rtx = transport.sent[sent_before]
    assert rtx[1] & 0x7F == RTX_RED.payloadType and int.from_bytes(rtx[8:12], "big") == RTX_SSRC
    assert payload_of(rtx)[:2] == media[-1][2:4] and payload_of(rtx)[2:] == payload_of(media[-1])
    await downtrack.stop()


async def test_without_red_negotiated_video_goes_out_plain_and_no_fec():
    downtrack, transport = await started_downtrack([VP8, RTX])
    downtrack.note_reported_loss(0.3)
    for n, packet in enumerate(source_stream(frames=30, seed=1)):
        await downtrack.forward(packet, VP8, keyframe_start=n == 0, abs_send_time=0, now=n / 100)
    assert transport.sent and all(d[1] & 0x7F == VP8.payloadType for d in transport.sent)
    assert downtrack.summary()["fec_group"] is None
    await downtrack.stop()


def receiver_report(highest: int, cumulative_lost: int, fraction: float) -> RtcpRrPacket:
    return RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
        ssrc=SSRC, fraction_lost=int(fraction * 256), packets_lost=cumulative_lost, highest_sequence=highest,
        jitter=0, lsr=0, dlsr=0)])


async def test_uplink_loss_in_the_subscribers_reports_does_not_turn_its_fec_on():
    """A subscriber counts lost every number it has not received, also those the publisher's
    uplink lost that we never sent: only the rest is the downlink's loss."""
    downtrack, transport = await started_downtrack([VP8, RTX, RED, ULPFEC, RTX_RED])
    stream = source_stream(frames=600, seed=6)
    upstream = random.Random(1)
    numbers: list[tuple[int, bool]] = []  # (down-track number, sent) in order

    async def forward(packets: list[RtpPacket]) -> None:
        for packet in packets:
            if packet is not stream[0] and upstream.random() < 0.25:
                continue  # lost upstream, never recovered
            before = len(transport.sent)
            await downtrack.forward(packet, VP8, keyframe_start=packet is stream[0], abs_send_time=0, now=0.0)
            for seq in map(seq_of, transport.sent[before:]):  # the media packet and FEC after it
                if numbers:  # what the subscriber sees as holes: the numbers skipped
                    numbers.extend((s % 65536, False) for s in range(numbers[-1][0] + 1,
                                                                     numbers[-1][0] + seq_diff(seq, numbers[-1][0])))
                numbers.append((seq, True))

    cumulative = 0

    async def report(extra_lost: int) -> None:
        nonlocal cumulative
        cumulative += sum(1 for _, sent in numbers[reported:] if not sent) + extra_lost
        await downtrack._handle_rtcp_packet(RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
            ssrc=SSRC, fraction_lost=64, packets_lost=cumulative, highest_sequence=(1 << 16) + numbers[-1][0],
            jitter=0, lsr=0, dlsr=0)]))

    reported = 0
    for part in range(3):  # everything we sent arrived; the subscriber reports the holes as lost
        await forward(stream[part * 100:(part + 1) * 100])
        await report(0)
        reported = len(numbers)
    assert sum(1 for _, sent in numbers if not sent) > 50
    assert downtrack.summary()["reported_loss"] < 0.01 and downtrack.summary()["fec_group"] is None
    # then 20 % of what we sent is lost on the downlink too: that is the loss FEC answers
    for part in range(3, 6):
        await forward(stream[part * 100:(part + 1) * 100])
        await report(int(0.2 * sum(1 for _, sent in numbers[reported:] if sent)))
        reported = len(numbers)
    assert 0.15 < downtrack.summary()["reported_loss"] < 0.21 and downtrack.summary()["fec_group"] is not None
    await downtrack.stop()


async def test_a_nack_that_crossed_a_late_packet_is_no_downlink_loss_and_unanswered_on_a_clean_downlink(monkeypatch):
    now = [50.0]
    monkeypatch.setattr(downtrack_module.time, "monotonic", lambda: now[0])
    downtrack, transport = await started_downtrack([VP8, RTX])
    downtrack.reports.rtt = 0.1
    stream = source_stream(frames=20, seed=2)
    held = stream[5]  # lost upstream, recovered a round trip later
    for n, packet in enumerate(stream):
        if packet is not held:
            await downtrack.forward(packet, VP8, keyframe_start=n == 0, abs_send_time=0, now=now[0])
    await downtrack.forward(held, VP8, keyframe_start=False, abs_send_time=0, now=now[0], late=True)
    late_seq = seq_of(transport.sent[-1])
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=SSRC)
    nack.lost = [late_seq]
    sent_before = len(transport.sent)
    now[0] += 0.05  # the subscriber asked while the packet was still missing: the NACK crossed it
    await downtrack._handle_rtcp_packet(nack)
    assert len(transport.sent) == sent_before and downtrack.nacks.crossed == 1
    now[0] += 0.15  # 2 RTTs after it went out still asking: the late packet was lost on the downlink
    await downtrack._handle_rtcp_packet(nack)
    assert len(transport.sent) == sent_before + 1 and downtrack.retransmitted == 1
    assert downtrack.nacks.nacked_in_sample == 1  # that one is downlink loss, the crossed one was not
    # on a lossy downlink a crossed NACK is answered (a second chance), still not counted as loss
    for _ in range(4):
        downtrack.downlink_loss.add(30, 100)
    assert downtrack.downlink_loss.copies > 1
    late_packet = stream[-1].__class__(payload_type=VP8.payloadType,
                                       sequence_number=(stream[-1].sequence_number + 2) % 65536,
                                       timestamp=stream[-1].timestamp + 3000, ssrc=1234, payload=b"\x10\x01late")
    await downtrack.forward(late_packet, VP8, keyframe_start=False, abs_send_time=0, now=now[0], late=True)
    nack.lost = [seq_of(transport.sent[-1])]
    sent_before, nacked_before = len(transport.sent), downtrack.nacks.nacked_in_sample
    await downtrack._handle_rtcp_packet(nack)
    assert len(transport.sent) > sent_before and downtrack.nacks.crossed == 2
    assert downtrack.nacks.nacked_in_sample == nacked_before
    await downtrack.stop()


async def test_fec_too_long_to_protect_is_not_sent_and_leaves_a_harmless_hole():
    """Full-size media (as Chrome packs a keyframe) plus FEC's headers would exceed what SRTP
    protects: that FEC packet is skipped, the media goes, and nothing raises."""
    downtrack = DownTrack(subscriber_id="s", kind="video", ssrc=SSRC, rtx_ssrc=RTX_SSRC)
    transport = CapturingTransport()
    transport._rtp_router = RtpRouter()  # transport-cc files the down-track under its RTX SSRC too
    await downtrack.start(transport, RTCRtpSendParameters(
        codecs=[VP8, RTX, RED, ULPFEC, RTX_RED], headerExtensions=EXTENSIONS + [transport_cc_extension(5)],
        muxId="3", rtcp=RTCRtcpParameters(cname="x")))
    downtrack.note_reported_loss(0.3)
    downtrack.note_reported_loss(0.3)
    rng = random.Random(4)
    for n in range(40):
        descriptor = bytes([0x10, 0x00 if n == 0 else 0x01])
        packet = RtpPacket(payload_type=VP8.payloadType, marker=1, sequence_number=n, timestamp=n * 3000, ssrc=1234,
                           payload=descriptor + rng.randbytes(MAX_PACKET_BYTES - 40))
        await downtrack.forward(packet, VP8, keyframe_start=n == 0, abs_send_time=0, now=n / 30)
    assert len([d for d in transport.sent if payload_of(d)[0] == VP8.payloadType]) == 40
    assert all(len(d) <= MAX_PACKET_BYTES for d in transport.sent)
    assert downtrack.summary()["fec_oversize"] > 0
    await downtrack.stop()
