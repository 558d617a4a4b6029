"""Patient, doctor and expert: real aiortc peers through the real server."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from .rtp_taps import tap_incoming_rtp, tap_outgoing_rtp

ROLES = ("patient", "doctor", "expert")


async def assert_everyone_decodes_everyone(people: dict, frames: int = 10, timeout: float = 15.0) -> None:
    checks = []
    for viewer, other in itertools.permutations(people.values(), 2):
        checks.append(viewer.wait_for_frames(other.id, "video", frames, timeout))
        checks.append(viewer.wait_for_frames(other.id, "audio", frames, timeout))
    await asyncio.gather(*checks)


@pytest.mark.parametrize("order", list(itertools.permutations(ROLES)), ids="-".join)
async def test_three_party_call_in_any_join_order(sfu, order):
    await sfu.room()
    people = {}
    for seed, role in enumerate(order):
        people[role] = await sfu.join(role, seed=seed)
    await assert_everyone_decodes_everyone(people)


VP8_PT = 97  # VP8 as aiortc numbers it in every offer


def _record_sent_video_payloads(participant) -> list[bytes]:
    sent: list[bytes] = []

    def record(packet) -> bool:
        if packet.payload_type == VP8_PT:
            sent.append(packet.payload)
        return True  # watch only, drop nothing

    tap_outgoing_rtp(participant.pc.getTransceivers()[0].sender.transport, record)
    return sent


def _record_received_payloads(participant) -> list[bytes]:
    received: list[bytes] = []

    def record(packet) -> None:
        if packet.payload_type == VP8_PT:
            received.append(packet.payload)

    tap_incoming_rtp(participant.pc.getTransceivers()[0].receiver.transport, record)
    return received


@pytest.mark.slow
async def test_forwarding_is_bit_exact_and_never_decodes_or_encodes(sfu):
    """A transcoding relay would change the bytes; an SFU forwards them untouched."""
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    sent = _record_sent_video_payloads(patient)
    received = _record_received_payloads(doctor)
    await doctor.wait_for_frames(patient.id, "video", 30)
    await asyncio.sleep(0.2)

    assert len(received) > 30
    sent_set = set(sent)
    matched = sum(1 for payload in received if payload in sent_set)
    # everything the doctor got from the patient is byte-identical to what the patient sent
    assert matched / len(received) > 0.95, (matched, len(received))

    # and the server never started aiortc's decoder threads or encoders
    live = sfu.services.rooms.live["r1"]
    for peer in live.media.peers.values():
        for transceiver in peer.pc.getTransceivers():
            assert transceiver.receiver._RTCRtpReceiver__decoder_thread is None
            assert transceiver.sender._RTCRtpSender__encoder is None


@pytest.mark.slow
async def test_late_joiner_sees_a_picture_within_one_second(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 10)
    # let the publisher's initial keyframe be long gone
    await asyncio.sleep(1.5)

    keyframes_forced = []
    for transceiver in patient.pc.getTransceivers():
        if transceiver.kind == "video" and transceiver.sender.track is not None:
            original = transceiver.sender._send_keyframe

            def counting(original=original):
                keyframes_forced.append(1)
                original()

            transceiver.sender._send_keyframe = counting

    loop = asyncio.get_running_loop()
    joined_at = loop.time()
    expert = await sfu.join("expert", seed=3)
    await expert.wait_for_frames(patient.id, "video", 1, timeout=5)
    first_picture_s = loop.time() - joined_at
    assert keyframes_forced, "the expert's keyframe request never reached the patient's encoder"
    assert first_picture_s < 1.0, f"first picture after {first_picture_s:.2f} s"


@pytest.mark.slow
async def test_leave_and_rejoin(sfu):
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)

    await patient.close()
    await doctor.wait_for(lambda m: m["type"] == "participant-left" and m["participant_id"] == patient.id)

    again = await sfu.join("patient", seed=4)
    await doctor.wait_for_frames(again.id, "video", 10)
    await again.wait_for_frames(doctor.id, "video", 10)
    # the returning patient reused the doctor's idle slot: no renegotiation for the doctor
    assert doctor.answers_sent == 2  # first offer, then the slot added when the patient first came


async def test_reconnect_with_the_same_token_replaces_the_old_session(sfu):
    await sfu.room()
    doctor = await sfu.join("doctor", seed=2)
    first = sfu.participant("patient", seed=1)
    await first.join()
    second = sfu.participant("patient", seed=5)
    second.token = first.token
    await second.join()
    await first.wait_for(lambda m: m["type"] == "closed" and m["reason"] == "replaced")
    await doctor.wait_for_frames(second.id, "video", 10)
    assert len(sfu.services.rooms.live["r1"].sessions) == 2


@pytest.mark.slow
async def test_everyone_leaving_frees_everything(sfu):
    await sfu.room()
    tasks_before = set(asyncio.all_tasks())
    people = [await sfu.join(role, seed=i) for i, role in enumerate(ROLES)]
    await people[1].wait_for_frames(people[0].id, "video", 5)
    peers = list(sfu.services.rooms.live["r1"].media.peers.values())
    for p in people:
        await p.close()
    for _ in range(100):
        if not sfu.services.rooms.live:
            break
        await asyncio.sleep(0.05)
    assert sfu.services.rooms.live == {}
    assert await sfu.services.registry.list_participants("r1") == []
    for peer in peers:
        assert peer.closed and peer.pc.connectionState == "closed"
        for pair in peer.pairs:
            for downtrack in pair.downtracks.values():
                assert downtrack.stopped and downtrack.source is None
        for track in peer.published.values():
            assert track.stopped and track.downtracks == []
    await asyncio.sleep(0.5)
    leftover = [t for t in asyncio.all_tasks() - tasks_before if not t.done() and t is not asyncio.current_task()]
    assert leftover == [], [t.get_coro() for t in leftover]


async def test_h264_room_forwards_h264(sfu):
    await sfu.room(video_codec="h264")
    people = {role: await sfu.join(role, seed=i) for i, role in enumerate(ROLES)}
    await assert_everyone_decodes_everyone(people, frames=10)
    live = sfu.services.rooms.live["r1"]
    for peer in live.media.peers.values():
        assert peer.published["video"].last_codec.name == "H264"


async def test_server_receive_backlog_is_bounded(sfu):
    from media.bounded_queue import DropOldestQueue

    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    for peer in sfu.services.rooms.live["r1"].media.peers.values():
        connection = peer.pc.getTransceivers()[0].receiver.transport.transport._connection
        assert isinstance(connection._queue, DropOldestQueue)
        assert connection._queue is peer.receive_queue
