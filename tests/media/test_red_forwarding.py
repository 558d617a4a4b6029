"""RED from a publisher, through the SFU: uplink losses recovered from the next packet's
copy, plain Opus to subscribers without RED, RED to those that accepted it.

The publisher is a real aiortc peer that answers and sends RED the way Chrome does
(loadtest.red_audio); its uplink loses 30 % of the audio packets, seeded.
"""

from __future__ import annotations

import random

from loadtest.clips import SweepAudioSpec, load_or_encode
from loadtest.participant import SyntheticParticipant
from loadtest.publisher import StampedClipTrack
from loadtest.red_audio import answer_with_red
from loadtest.sources import PatternVideoTrack

from .rtp_taps import tap_incoming_rtp, tap_outgoing_rtp


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

    rng = random.Random(11)
    sent: list[int] = []
    dropped: set[int] = set()
    seen_originals: set[int] = set()

    def lossy(packet) -> bool:
        if packet.payload_type != red_pt:
            return True
        if packet.sequence_number in seen_originals:
            return True  # a retransmission: let it through, this test is about RED
        seen_originals.add(packet.sequence_number)
        sent.append(packet.sequence_number)
        if rng.random() < 0.3:
            dropped.add(packet.sequence_number)
            return False
        return True

    to_doctor: set[int] = set()
    to_expert: set[int] = set()
    tap_incoming_rtp(doctor.pc.getTransceivers()[0].receiver.transport, lambda p: to_doctor.add(p.payload_type))
    tap_incoming_rtp(expert.pc.getTransceivers()[0].receiver.transport, lambda p: to_expert.add(p.payload_type))
    before = track.red_recovered
    heard_before = doctor.frames_from(patient.id, "audio")
    tap_outgoing_rtp(patient.pc.getTransceivers()[0].sender.transport, lossy)
    await doctor.wait_for_frames(patient.id, "audio", heard_before + 150, timeout=15)

    # a lost packet whose successor arrived comes back from that successor's copy, without a NACK
    closed = sent[:-1]
    singles = [s for s in closed if s in dropped and (s + 1) & 0xFFFF not in dropped]
    assert len(singles) > 20
    assert track.red_recovered - before >= len(singles) * 0.95, (track.red_recovered - before, len(singles))
    assert track.packets_dropped == 0
    # the plain subscriber got Opus it can decode (its receiver drops payload types it did not negotiate)
    opus_pt = next(r.opus_pt for r in patient.red.values())
    assert opus_pt in to_doctor and red_pt not in to_doctor
    # the subscriber that accepted RED got the RED packets themselves
    assert red_pt in to_expert
