"""RED from a publisher, through the SFU: uplink losses recovered from the next packet's
copy, plain Opus to subscribers without RED, RED to those that accepted it, and the
recovered frames on their own too where such a subscriber's downlink loses packets.

The publisher is a real aiortc peer that answers and sends RED the way Chrome does
(loadtest.red_audio); its uplink loses 30 % of the audio packets, seeded.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from loadtest.clips import SweepAudioSpec, load_or_encode
from loadtest.participant import SyntheticParticipant
from loadtest.publisher import StampedClipTrack
from loadtest.red_audio import answer_with_red
from loadtest.sources import PatternVideoTrack

from .rtp_taps import drop_incoming_rtp, tap_incoming_rtp, tap_outgoing_rtp

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds


class RedAnsweringParticipant(SyntheticParticipant):
    """Accepts red in its answers like Chrome; sends RED when it publishes a clip track.
    Its receivers are left stock: this test looks at what arrives, not at decoding it."""

    def _new_peer_connection(self):
        self.red: dict = {}
        pc = super()._new_peer_connection()
        pc.createAnswer = answer_with_red(pc, lambda: self._offer_sdp, self.red, receive=False)
        return pc

    async def _answer(self, offer: dict) -> None:
        self._offer_sdp = offer["sdp"]
        await super()._answer(offer)


async def test_uplink_losses_come_back_from_red_copies(sfu):
    await sfu.room()
    clip = load_or_encode(SweepAudioSpec(seconds=6), None)
    patient = RedAnsweringParticipant(sfu.base_url, sfu.token("patient"), audio=StampedClipTrack(clip),
                                      video=PatternVideoTrack(seed=1))
    sfu.participants.append(patient)
    await patient.join()
    doctor = await sfu.join("doctor", seed=2)  # a plain aiortc peer: no RED
    expert = RedAnsweringParticipant(sfu.base_url, sfu.token("expert"))  # accepts RED, publishes nothing
    sfu.participants.append(expert)
    await expert.join()
    await doctor.wait_for_frames(patient.id, "audio", 20)

    track = sfu.services.rooms.live["r1"].media.peers[patient.id].published["audio"]
    assert track.summary()["red"], "the patient answered red first: its audio arrives as RED"
    red_pt = next(r.red_pt for r in patient.red.values() if r.red_first)

    lossy = RedUplinkLoss(red_pt, random.Random(11))
    to_doctor: set[int] = set()
    to_expert: set[int] = set()
    to_doctor_ssrc, to_expert_ssrc = (downtrack_ssrc(track, p.id) for p in (doctor, expert))
    tap_incoming_rtp(doctor.pc.getTransceivers()[0].receiver.transport,
                     lambda p: p.ssrc == to_doctor_ssrc and to_doctor.add(p.payload_type))
    tap_incoming_rtp(expert.pc.getTransceivers()[0].receiver.transport,
                     lambda p: p.ssrc == to_expert_ssrc and to_expert.add(p.payload_type))
    before = track.red_recovered
    heard_before = doctor.frames_from(patient.id, "audio")
    tap_outgoing_rtp(patient.pc.getTransceivers()[0].sender.transport, lossy)
    await doctor.wait_for_frames(patient.id, "audio", heard_before + 150, timeout=15)
    lossy.stop()

    # a lost packet whose successor arrived comes back from that successor's copy, without a NACK;
    # the last packets sent may still be on their way to the server (a busy machine), so wait for them
    singles = [s for s in lossy.sent[:-1] if s in lossy.dropped and (s + 1) & 0xFFFF not in lossy.dropped]
    assert len(singles) > 20
    deadline = time.monotonic() + 10
    while track.red_recovered - before < len(singles) * 0.95 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert track.red_recovered - before >= len(singles) * 0.95, (track.red_recovered - before, len(singles))
    assert track.packets_dropped == 0
    # the plain subscriber got Opus it can decode (its receiver drops payload types it did not negotiate)
    assert to_doctor == {opus_pt_to(doctor, track)}
    # the subscriber that accepted RED got the RED packets themselves, and on its clean
    # downlink no recovered frame on its own: each is inside the RED packet that follows
    assert to_expert == {red_pt_to(expert, track)}


async def test_a_red_subscriber_on_a_lossy_downlink_also_gets_recovered_frames_on_their_own(sfu):
    """A frame the uplink lost comes to a RED subscriber inside the next RED packet; where that
    subscriber's downlink loses packets too, the SFU also sends the frame as its own packet."""
    await sfu.room()
    clip = load_or_encode(SweepAudioSpec(seconds=6), None)
    patient = RedAnsweringParticipant(sfu.base_url, sfu.token("patient"), audio=StampedClipTrack(clip),
                                      video=PatternVideoTrack(seed=1))
    expert = RedAnsweringParticipant(sfu.base_url, sfu.token("expert"))
    sfu.participants += [patient, expert]
    await patient.join()
    await expert.join()
    await expert.wait_for_frames(patient.id, "video", 5)
    red_pt = next(r.red_pt for r in patient.red.values() if r.red_first)
    media = sfu.services.rooms.live["r1"].media
    track = media.peers[patient.id].published["audio"]
    to_expert_ssrc, opus_pt = downtrack_ssrc(track, expert.id), opus_pt_to(expert, track)

    # the expert's downlink loses 30 % (seeded); its video NACKs tell the SFU so
    downlink_rng = random.Random(5)
    plain_to_expert: set[int] = set()  # sequence numbers of the patient's plain Opus packets sent its way

    def downlink(packet) -> bool:
        if packet.ssrc == to_expert_ssrc and packet.payload_type == opus_pt:
            plain_to_expert.add(packet.sequence_number)
        return downlink_rng.random() >= 0.3

    drop_incoming_rtp(expert.pc.getTransceivers()[0].receiver.transport, downlink)
    deadline = time.monotonic() + 20
    while media.peers[expert.id].downlink_loss.copies == 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert media.peers[expert.id].downlink_loss.copies > 1, media.peers[expert.id].downlink_loss.value

    before, plain_before = track.red_recovered, len(plain_to_expert)
    tap_outgoing_rtp(patient.pc.getTransceivers()[0].sender.transport, RedUplinkLoss(red_pt, random.Random(11)))
    deadline = time.monotonic() + 15
    while track.red_recovered - before < 40 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    recovered = track.red_recovered - before
    assert recovered >= 40, recovered
    # every recovered frame went out on its own too (as long as the downlink stays lossy)
    assert media.peers[expert.id].downlink_loss.copies > 1
    assert len(plain_to_expert) - plain_before >= recovered, (len(plain_to_expert) - plain_before, recovered)
    assert track.summary()["red_recovered_alone"] >= recovered


def _audio_downtrack(track, subscriber_id: str):
    return next(d for d in track._downtracks if d.subscriber_id == subscriber_id)


def downtrack_ssrc(track, subscriber_id: str) -> int:
    return _audio_downtrack(track, subscriber_id).ssrc


def _down_payload_type(subscriber, track, mime: str) -> int:
    """The payload type of `mime` on the down-track from `track` to `subscriber`, as negotiated with it."""
    return next(pt for key, pt in _audio_downtrack(track, subscriber.id)._out_pt.items() if key[0] == mime)


def opus_pt_to(subscriber, track) -> int:
    return _down_payload_type(subscriber, track, "audio/opus")


def red_pt_to(subscriber, track) -> int:
    return _down_payload_type(subscriber, track, "audio/red")


class RedUplinkLoss:
    """A publisher-side tap dropping 30 % of first transmissions of RED packets (seeded),
    recording what it sent and dropped until stopped; after `stop()` everything passes."""

    def __init__(self, red_pt: int, rng: random.Random) -> None:
        self.red_pt, self.rng = red_pt, rng
        self.sent: list[int] = []
        self.dropped: set[int] = set()
        self.active = True
        self._seen_originals: set[int] = set()

    def stop(self) -> None:
        self.active = False

    def __call__(self, packet) -> bool:
        if not self.active or packet.payload_type != self.red_pt:
            return True
        if packet.sequence_number in self._seen_originals:
            return True  # a retransmission: let it through, these tests are about RED
        self._seen_originals.add(packet.sequence_number)
        self.sent.append(packet.sequence_number)
        if self.rng.random() < 0.3:
            self.dropped.add(packet.sequence_number)
            return False
        return True
