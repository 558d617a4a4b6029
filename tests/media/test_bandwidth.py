"""Subscribers' bandwidth estimates (REMB) reach the publisher's encoder only
when every subscriber is constrained."""

from __future__ import annotations

import asyncio
import time

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

LOW = 300_000


def publisher_target(participant) -> int | None:
    for t in participant.pc.getTransceivers():
        if t.kind == "video" and t.sender.track is not None:
            encoder = t.sender._RTCRtpSender__encoder
            return encoder.target_bitrate if encoder is not None else None
    return None


async def report_low_bandwidth(subscriber, publisher_id: str, seconds: float) -> None:
    """The subscriber tells the SFU, again and again, that its downlink carries only LOW bit/s."""
    mid = next(m for m, info in subscriber.tracks_map.items()
               if info and info["participant"] == publisher_id and info["kind"] == "video")
    transceiver = next(t for t in subscriber.pc.getTransceivers() if t.mid == mid)
    remote_ssrc = next(iter(transceiver.receiver._RTCRtpReceiver__remote_streams))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=transceiver.sender._ssrc, media_ssrc=0,
                              fci=pack_remb_fci(LOW, [remote_ssrc]))
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

    # only the expert is constrained: the patient keeps its bitrate for the doctor
    weak_expert = asyncio.ensure_future(report_low_bandwidth(expert, patient.id, 3.0))
    target = await wait_for_target(patient, lambda t: t is not None and t <= LOW, timeout=3.0)
    await weak_expert
    assert target is not None and target > LOW, "one weak subscriber capped the publisher for everyone"

    # both constrained: the publisher's encoder follows
    both = [asyncio.ensure_future(report_low_bandwidth(v, patient.id, 4.0)) for v in (doctor, expert)]
    target = await wait_for_target(patient, lambda t: t is not None and t <= LOW, timeout=4.0)
    await asyncio.gather(*both)
    assert target is not None and target <= LOW, target
