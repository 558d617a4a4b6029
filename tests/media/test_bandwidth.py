"""Subscribers' bandwidth estimates (REMB) reach the publisher's encoder only
when every subscriber is constrained."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc.rtp import RTCP_PSFB_APP, RtcpPacket, RtcpPsfbPacket, is_rtcp, pack_remb_fci, unpack_remb_fci

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds

LOW = 300_000  # above aiortc's encoder floor (250 kbit/s), so the encoder can follow it
WEAK = 60_000  # far below any uplink estimate, so following the weak subscriber would show
HIGH = 5_000_000


def publisher_target(participant) -> int | None:
    for t in participant.pc.getTransceivers():
        if t.kind == "video" and t.sender.track is not None:
            encoder = t.sender._RTCRtpSender__encoder
            return encoder.target_bitrate if encoder is not None else None
    return None


def remb_sent_to(track) -> list[tuple[int, int | None, list[int | None]]]:
    """Every REMB the server sends the publisher, with the server's uplink estimate and the
    subscribers' estimates it knew at that moment."""
    sent: list[tuple[int, int | None, list[int | None]]] = []
    transport = track.transport
    original = transport._send_rtp

    async def watching(data: bytes) -> None:
        if is_rtcp(data):
            for packet in RtcpPacket.parse(data):
                if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                    downlinks = [d.remb_bitrate for d in track._downtracks]
                    sent.append((unpack_remb_fci(packet.fci)[0], track.uplink_estimate, downlinks))
        await original(data)

    transport._send_rtp = watching
    return sent


async def report_bandwidth(subscriber, publisher_id: str, seconds: float, bitrate: int = LOW) -> None:
    """The subscriber tells the SFU, again and again, that its downlink carries `bitrate` bit/s
    (until cancelled, or for `seconds`)."""
    mid = next(m for m, info in subscriber.tracks_map.items()
               if info and info["participant"] == publisher_id and info["kind"] == "video")
    transceiver = next(t for t in subscriber.pc.getTransceivers() if t.mid == mid)
    remote_ssrc = next(iter(transceiver.receiver._RTCRtpReceiver__remote_streams))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=transceiver.sender._ssrc, media_ssrc=0,
                              fci=pack_remb_fci(bitrate, [remote_ssrc]))
        await transceiver.receiver.transport._send_rtp(bytes(remb))
        await asyncio.sleep(0.05)


async def wait_for_target(participant, predicate, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(publisher_target(participant)):
            return publisher_target(participant)
        await asyncio.sleep(0.1)
    return publisher_target(participant)


async def test_publisher_is_capped_only_when_every_subscriber_is_constrained(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    expert = await sfu.join("expert", seed=3)
    for viewer in (doctor, expert):
        await viewer.wait_for_frames(patient.id, "video", 10)

    track = sfu.services.rooms.live["r1"].media.peers[patient.id].published["video"]
    sent = remb_sent_to(track)

    # only the expert is constrained: what the server asks of the patient ignores the expert
    reports = [asyncio.ensure_future(report_bandwidth(expert, patient.id, 30.0, WEAK)),
               asyncio.ensure_future(report_bandwidth(doctor, patient.id, 30.0, HIGH))]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(both_known(downlinks) for _, _, downlinks in sent) < 5:
        await asyncio.sleep(0.1)
    for task in reports:
        task.cancel()
    await asyncio.gather(*reports, return_exceptions=True)
    with_both = [(bitrate, uplink, downlinks) for bitrate, uplink, downlinks in sent if both_known(downlinks)]
    assert len(with_both) >= 5, f"the server sent the publisher no REMB once both reports were in: {sent}"
    for bitrate, uplink, downlinks in with_both:
        assert bitrate > WEAK * 1.5, f"REMB {bitrate}: the server followed the weak expert"
        # the strongest subscriber's figure (ours, or the doctor's aiortc receiver's own REMB)
        strongest = max(d for d in downlinks if d is not None)
        expected = strongest if uplink is None else min(uplink, strongest)
        # REMB carries an 18-bit mantissa: the value on the wire is within 0.1 % of the estimate
        assert abs(bitrate - expected) <= expected * 0.001, \
            f"REMB {bitrate} with uplink estimate {uplink}: the weak expert capped the publisher"

    # both constrained: the publisher's encoder follows (reports go on until it has, or 30 s)
    both = [asyncio.ensure_future(report_bandwidth(v, patient.id, 30.0)) for v in (doctor, expert)]
    target = await wait_for_target(patient, lambda t: t is not None and t <= LOW, timeout=30.0)
    for task in both:
        task.cancel()
    await asyncio.gather(*both, return_exceptions=True)
    assert target is not None and target <= LOW, target


def both_known(downlinks: list[int | None]) -> bool:
    """The server had the weak expert's report and some figure for the doctor."""
    known = [d for d in downlinks if d is not None]
    return len(downlinks) == len(known) == 2 and min(known) <= WEAK * 1.01
