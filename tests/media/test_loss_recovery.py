"""Lost packets on a subscriber's downlink are recovered from the down-track's cache."""

from __future__ import annotations

import random

from .rtp_taps import tap_outgoing_rtp


def drop_video_packets(downtrack, rate: float, seed: int) -> list[int]:
    """Seeded loss on one down-track's transport (original video packets only, not RTX)."""
    rng = random.Random(seed)
    dropped: list[int] = []

    def keep(packet) -> bool:
        if packet.ssrc == downtrack._ssrc and rng.random() < rate:
            dropped.append(packet.sequence_number)
            return False
        return True

    tap_outgoing_rtp(downtrack.transport, keep)
    return dropped


async def test_subscriber_nacks_are_answered_from_the_cache_with_rtx(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)

    doctor_peer = sfu.services.rooms.live["r1"].media.peers[doctor.id]
    downtrack = doctor_peer.slot_for(patient.id).downtracks["video"]
    dropped = drop_video_packets(downtrack, rate=0.05, seed=42)
    before = doctor.frames_from(patient.id, "video")

    await doctor.wait_for_frames(patient.id, "video", 60, timeout=15)

    assert len(dropped) >= 3, "the seeded loss should have hit a few packets"
    assert downtrack.nacks_received > 0
    assert downtrack.retransmitted >= len(dropped) * 0.8
    # with every loss repaired, the doctor's decoder saw no picture loss worth a keyframe
    assert doctor.frames_from(patient.id, "video") - before >= 60


async def test_uplink_loss_is_recovered_by_nack_retries(sfu):
    """20 % seeded loss on the patient's uplink, retransmissions included."""
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)

    rng = random.Random(7)
    dropped = []

    def lossy(packet) -> bool:
        if rng.random() < 0.2:
            dropped.append(packet.sequence_number)
            return False
        return True

    tap_outgoing_rtp(patient.pc.getTransceivers()[0].sender.transport, lossy)
    await doctor.wait_for_frames(patient.id, "video", 60, timeout=20)

    track = sfu.services.rooms.live["r1"].media.peers[patient.id].published["video"]
    stats = track.nack_stats
    assert len(dropped) > 20
    assert stats["recovered"] > 0
    # most losses come back; what does not is repaired by a keyframe, not waited for
    assert stats["given_up"] <= stats["recovered"] / 4, stats


async def test_audio_nacks_are_answered_too(sfu):
    """An audio NACK (negotiated with browsers) is answered from the down-track's cache."""
    from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "audio", 20)
    downtrack = sfu.services.rooms.live["r1"].media.peers[doctor.id].slot_for(patient.id).downtracks["audio"]
    resent: list[int] = []

    def watch(packet) -> bool:
        if packet.ssrc == downtrack._ssrc:
            resent.append(packet.sequence_number)
        return True

    recent = downtrack._rewriter._last_seq
    tap_outgoing_rtp(downtrack.transport, watch)
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=downtrack._ssrc)
    nack.lost = [recent]
    await downtrack._handle_rtcp_packet(nack)
    assert recent in resent and downtrack.retransmitted == 1
