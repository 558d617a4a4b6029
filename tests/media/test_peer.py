"""MediaPeer (media/peer.py): the server's side of one participant's connection, which always
offers. The offers it makes (publish sections first, then a send-only audio+video slot pair
per remote participant sharing one msid stream; simulcast RIDs only where asked and only on
a publisher's camera; transport-cc on what it sends), what its slot pairs do as participants
come and go, and how it takes answers: a real aiortc peer on loopback answers as a browser
does (tests/support/browser_peer.py); a bad answer is refused with a protocol error code and
leaves the peer able to take the good one.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Optional

import pytest

from loadtest.simulcast_sdp import add_simulcast_to_answer, offered_simulcast
from loadtest.transport_feedback import answer_with_transport_cc, feedback_generators, transport_sequence_number
from media.ice import IceConfig
from media.peer import MAX_SLOT_PAIRS, AnswerRejected, MediaPeer
from media.published_track import PublishedTrack
from media.rtp_writer import TRANSPORT_CC_URI
from media.sdp_tweaks import join_sections, section_mid, split_sections
from media.simulcast import Publication
from tests.support.browser_peer import BrowserPeer, eventually
from tests.support.media_call import MediaCall

DIRECTIONS = ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive")


class PeerCalls:
    """What a MediaPeer calls back."""

    def __init__(self) -> None:
        self.started: list[Publication] = []
        self.failed: list[MediaPeer] = []
        self.connected = 0


class Peers:
    """MediaPeers and browsers made by a test, closed after it."""

    def __init__(self) -> None:
        self._closing: list = []

    def peer(self, participant_id: str = "doctor", *, publish: bool = True, subscribe: bool = True,
             **options) -> tuple[MediaPeer, PeerCalls]:
        calls = PeerCalls()
        peer = MediaPeer(participant_id, publish=publish, subscribe=subscribe, ice=IceConfig(),
                         on_track_started=lambda p, track: calls.started.append(track),
                         on_connection_failed=calls.failed.append, **options)

        def connected() -> None:
            calls.connected += 1

        peer.on_connected = connected
        self._closing.append(peer)
        return peer, calls

    def browser(self, *, publish: bool = False) -> BrowserPeer:
        browser = BrowserPeer(publish=publish)
        self._closing.append(browser)
        return browser

    async def close(self) -> None:
        for thing in reversed(self._closing):
            await thing.close()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    made = Peers()
    yield made
    await made.close()


def sections(sdp: str) -> list[list[str]]:
    return split_sections(sdp)[1]


def layout(sdp: str) -> list[tuple[str, str]]:
    """(kind, direction) of each m-section, in order."""
    return [(s[0][2:].split()[0], next(line[2:] for line in s if line in DIRECTIONS)) for s in sections(sdp)]


def msid_stream(section: list[str]) -> str:
    return next(line.split()[0][len("a=msid:"):] for line in section if line.startswith("a=msid:"))


def first_codec(section: list[str]) -> str:
    pt = section[0].split()[3]
    return next(line.split()[1].split("/")[0] for line in section if line.startswith(f"a=rtpmap:{pt} "))


def edit_section(sdp: str, mid: Optional[str], edit) -> str:
    session, found = split_sections(sdp)
    return join_sections(session, [edit(s) if section_mid(s) == mid else s for s in found])


# --- the offer ----------------------------------------------------------------------------------------------


async def test_the_offer_has_the_publish_sections_first_then_one_msid_stream_per_slot_pair(peers):
    peer, _ = peers.peer(publish=True, subscribe=True)
    patients, created = peer.claim_slot("patient")
    experts, also_created = peer.claim_slot("expert")
    assert created and also_created
    assert peer.publish_mids() == {"audio": None, "video": None}  # numbered by the first offer

    offer = await peer.create_offer()
    assert layout(offer) == [("audio", "recvonly"), ("video", "recvonly")] + [("audio", "sendonly"),
                                                                               ("video", "sendonly")] * 2
    mids = [section_mid(s) for s in sections(offer)]
    assert len(set(mids)) == 6 and f"a=group:BUNDLE {' '.join(mids)}" in offer  # one transport
    assert peer.publish_mids() == {"audio": mids[0], "video": mids[1]}
    streams = [msid_stream(s) for s in sections(offer)[2:]]
    assert streams == [patients.stream_id] * 2 + [experts.stream_id] * 2
    assert patients.stream_id != experts.stream_id
    assert peer.track_map() == {
        mids[2]: {"participant": "patient", "kind": "audio"}, mids[3]: {"participant": "patient", "kind": "video"},
        mids[4]: {"participant": "expert", "kind": "audio"}, mids[5]: {"participant": "expert", "kind": "video"}}
    assert peer.stats.renegotiations == 1


async def test_a_participant_without_publish_permission_is_offered_its_slots_only(peers):
    peer, _ = peers.peer(publish=False, subscribe=True)
    peer.claim_slot("patient")
    offer = await peer.create_offer()
    assert layout(offer) == [("audio", "sendonly"), ("video", "sendonly")]
    assert peer.publish_mids() is None


async def test_the_publishers_camera_is_steered_to_the_rooms_codec_and_slots_take_every_codec(peers):
    peer, _ = peers.peer(video_codec="h264")
    peer.claim_slot("patient")
    camera, slot = (s for s in sections(await peer.create_offer()) if s[0].startswith("m=video"))
    assert first_codec(camera) == "H264"
    assert first_codec(slot) == "VP8" and any(" H264/90000" in line for line in slot)
    with pytest.raises(ValueError, match="video codec"):
        peers.peer("other", video_codec="av1")


@pytest.mark.parametrize(("simulcast", "publish", "rids_offered"), [
    (True, True, True),
    (False, True, False),  # not asked (e.g. a room that makes watermarked copies per viewer)
    (True, False, False),  # asked, but this participant does not publish
])
async def test_simulcast_rids_are_offered_only_when_asked_and_only_on_a_publishers_camera(
        peers, simulcast, publish, rids_offered):
    peer, _ = peers.peer(publish=publish, simulcast=simulcast)
    peer.claim_slot("patient")
    offer = await peer.create_offer()
    assert peer.offers_simulcast is rids_offered
    with_rids = [(section_mid(s), layout_of) for s, layout_of in zip(sections(offer), layout(offer))
                 if any(line.startswith(("a=rid:", "a=simulcast:")) for line in s)]
    if not rids_offered:
        assert with_rids == []
        return
    assert with_rids == [(peer.publish_mids()["video"], ("video", "recvonly"))]
    camera = next(s for s in sections(offer) if section_mid(s) == peer.publish_mids()["video"])
    assert [line for line in camera if line.startswith(("a=rid:", "a=simulcast:"))] == [
        "a=rid:h recv", "a=rid:m recv", "a=rid:l recv", "a=simulcast:recv h;m;l"]
    assert any(line.endswith(" urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id") for line in camera)


async def test_transport_cc_is_offered_on_every_section_the_server_sends_on_and_no_other(peers):
    peer, _ = peers.peer()
    peer.claim_slot("patient")
    peer.claim_slot("expert")
    offer = await peer.create_offer()
    ext_ids = set()
    for section, (_, direction) in zip(sections(offer), layout(offer)):
        extmap = [line for line in section if line.startswith("a=extmap:") and line.endswith(" " + TRANSPORT_CC_URI)]
        feedback = [line for line in section if line.endswith(" transport-cc")]
        if direction == "recvonly":  # the publisher's: a browser would wait for feedback we do not give
            assert extmap == [] and feedback == []
            continue
        assert len(extmap) == 1 and feedback
        ext_ids.add(extmap[0].split()[0])
        media_pt = next(line for line in section if " opus/" in line or " VP8/" in line).split()[0][len("a=rtpmap:"):]
        assert f"a=rtcp-fb:{media_pt} transport-cc" in section
    assert len(ext_ids) == 1  # one sequence across the bundle


# --- slot pairs -------------------------------------------------------------------------------------------------


async def test_a_released_pair_is_reused_before_another_is_added_and_the_pairs_are_bounded(peers):
    peer, _ = peers.peer(publish=False)
    patients, _ = peer.claim_slot("patient")
    assert peer.claim_slot("patient") == (patients, False)  # the same publisher: the same pair
    experts, _ = peer.claim_slot("expert")
    peer.set_view("patient", (320, 180))
    first = await peer.create_offer()

    assert peer.release_slot("patient") is patients
    assert patients.publisher_id is None and patients.downtracks["video"].view is None
    assert peer.release_slot("patient") is None
    assert peer.track_map()[patients.mid("audio")] is None  # what the page is told: nothing there

    reused, created = peer.claim_slot("nurse")
    assert reused is patients and not created  # no renegotiation: the mids the page already has
    assert reused.downtracks["video"].view is None  # the patient's view was the patient's
    assert peer.pairs == [patients, experts]
    assert peer.track_map()[patients.mid("video")] == {"participant": "nurse", "kind": "video"}
    assert layout(first) == [("audio", "sendonly"), ("video", "sendonly")] * 2

    peer.set_view("latecomer", (640, 360))  # a view told before its video: applied when the pair is claimed
    latecomers, created = peer.claim_slot("latecomer")
    assert created and latecomers.downtracks["video"].view == (640, 360)
    for n in range(len(peer.pairs), MAX_SLOT_PAIRS):
        peer.claim_slot(f"p{n}")
    with pytest.raises(RuntimeError, match=f"already receives {MAX_SLOT_PAIRS}"):
        peer.claim_slot("one-too-many")
    assert len(peer.pairs) == MAX_SLOT_PAIRS


# --- the answer ---------------------------------------------------------------------------------------------------


async def test_an_answer_connects_the_peer_and_starts_the_publishers_tracks(peers):
    peer, calls = peers.peer()
    browser = peers.browser(publish=True)
    await browser.negotiate(peer)
    await eventually(lambda: len(calls.started) == 2, what="both tracks started")
    assert {t.kind for t in calls.started} == {"audio", "video"}
    assert all(isinstance(t, PublishedTrack) and peer.published[t.kind] is t for t in calls.started)
    assert all(t.participant_id == "doctor" for t in calls.started)
    await eventually(lambda: all(t.summary()["packets"] > 5 for t in calls.started), what="media arriving")
    assert peer.pc.connectionState == "connected" and calls.connected == 1
    assert peer.stats.renegotiations == 1 and peer.stats.answers_rejected == 0 and calls.failed == []


async def test_a_second_offer_keeps_the_mids_and_adds_the_new_pair_at_the_end(peers):
    peer, calls = peers.peer()
    browser = peers.browser(publish=True)
    peer.claim_slot("patient")
    first = await browser.negotiate(peer)
    await eventually(lambda: len(calls.started) == 2)
    started = list(calls.started)

    peer.claim_slot("expert")
    second = await browser.negotiate(peer)
    assert [section_mid(s) for s in sections(second)][:4] == [section_mid(s) for s in sections(first)]
    assert layout(second) == layout(first) + [("audio", "sendonly"), ("video", "sendonly")]
    assert peer.track_map()[section_mid(sections(second)[5])] == {"participant": "expert", "kind": "video"}
    assert peer.stats.renegotiations == 2 and calls.connected == 1
    assert calls.started == started  # the tracks go on: nothing restarted
    await eventually(lambda: all(d.started for p in peer.pairs for d in p.downtracks.values()),
                     what="the new pair's down-tracks started")


def drop_last_section(answer: str, offer: str) -> str:
    session, found = split_sections(answer)
    return join_sections(session, found[:-1])


def without(prefix: str):
    def edit(answer: str, offer: str) -> str:
        return "".join(line for line in answer.splitlines(keepends=True) if not line.startswith(prefix))
    return edit


def sending_on_the_slot(answer: str, offer: str) -> str:
    # the first slot pair's audio: the server's to send on
    mid = next(section_mid(s) for s, (_, direction) in zip(sections(offer), layout(offer)) if direction == "sendonly")
    return edit_section(answer, mid, lambda s: [("a=sendrecv" if line in DIRECTIONS else line) for line in s])


def no_common_audio_codec(answer: str, offer: str) -> str:
    """Well formed, but naming no audio codec aiortc has: refused by aiortc itself."""
    return re.sub(r"a=rtpmap:(\d+) (opus|G722|PCMU|PCMA)/", r"a=rtpmap:\1 nonesuch/", answer)


@pytest.mark.parametrize(("edit", "code", "message"), [
    (lambda answer, offer: "this is not an SDP answer", "bad_sdp", "do not match the offer"),
    (drop_last_section, "bad_sdp", "do not match the offer"),
    (without("a=setup:"), "bad_sdp", "lacks ICE or DTLS parameters"),
    (without("a=ice-"), "bad_sdp", "ICE username fragment or password is missing"),
    (sending_on_the_slot, "forbidden", "is not allowed"),
    (no_common_audio_codec, "bad_sdp", "could not be applied"),
], ids=["garbage", "missing-section", "no-dtls-role", "no-ice-credentials", "sends-on-a-slot",
        "no-common-codec"])
async def test_a_bad_answer_is_refused_with_a_clear_error_and_the_good_one_still_works(peers, edit, code, message):
    peer, calls = peers.peer()
    browser = peers.browser(publish=True)
    peer.claim_slot("patient")
    offer = await peer.create_offer()
    answer = await browser.answer(offer, peer.publish_mids())
    with pytest.raises(AnswerRejected, match=message) as refused:
        await peer.apply_answer(edit(answer, offer))
    assert refused.value.code == code and message in refused.value.message
    assert peer.stats.answers_rejected == 1

    await peer.apply_answer(answer)  # the offer is still waiting for its answer
    await eventually(lambda: len(calls.started) == 2 and peer.pc.connectionState == "connected",
                     what="connected and publishing after the refusal")
    assert peer.stats.answers_rejected == 1
    with pytest.raises(AnswerRejected, match="no offer is waiting") as late:
        await peer.apply_answer(answer)  # answered already
    assert late.value.code == "bad_state"


async def test_a_participant_without_publish_permission_may_not_send(peers):
    peer, _ = peers.peer(publish=False)
    browser = peers.browser()
    peer.claim_slot("patient")
    offer = await peer.create_offer()
    answer = await browser.answer(offer, peer.publish_mids())
    with pytest.raises(AnswerRejected, match="no publish permission") as refused:
        await peer.apply_answer(sending_on_the_slot(answer, offer))
    assert refused.value.code == "forbidden"
    fresh, _ = peers.peer("other", publish=False)
    with pytest.raises(AnswerRejected, match="no offer is waiting") as unasked:
        await fresh.apply_answer(answer)  # nothing offered yet
    assert unasked.value.code == "bad_state"


async def test_a_subscribe_only_peer_has_nothing_to_offer_until_someone_publishes(peers):
    """An offer without a media section cannot be answered ('answer lacks ICE or DTLS
    parameters'): a participant who only watches, alone in the room, is offered nothing (the
    session asks `has_media`) until a publisher's slot pair is claimed."""
    peer, _ = peers.peer(publish=False)
    assert not peer.has_media
    peer.claim_slot("patient")
    assert peer.has_media
    browser = peers.browser()
    offer = await peer.create_offer()
    await peer.apply_answer(await browser.answer(offer, peer.publish_mids()))


async def test_what_a_refused_answer_said_is_forgotten(peers):
    """apply_answer records the answer's simulcast RIDs (and RED, FEC, transport-cc) before aiortc
    takes it; when aiortc refuses it they must go, or a good single-stream answer after it gets a
    SimulcastTrack waiting for RIDs that never come."""
    peer, calls = peers.peer(simulcast=True)
    browser = peers.browser(publish=True)
    offer = await peer.create_offer()
    answer = await browser.answer(offer, peer.publish_mids())
    layered = add_simulcast_to_answer(answer, offered_simulcast(offer)[peer.publish_mids()["video"]])
    with pytest.raises(AnswerRejected, match="could not be applied"):
        await peer.apply_answer(no_common_audio_codec(layered, offer))
    await peer.apply_answer(answer)  # one stream, no simulcast
    await eventually(lambda: len(calls.started) == 2)
    camera = peer.published["video"]
    assert isinstance(camera, PublishedTrack)  # not a SimulcastTrack: the answer sends one stream
    await eventually(lambda: camera.summary()["packets"] > 5, timeout=5, what="the camera's packets taken")


# --- transport-cc end to end -----------------------------------------------------------------------------------------


class NumberedPackets:
    """Counts the RTP packets a browser's transport receives, and those with a transport-wide number."""

    def __init__(self, browser: BrowserPeer, ext_id: int) -> None:
        self.packets = self.numbered = 0
        transport = browser.pc.getTransceivers()[0].receiver.transport
        original = transport._handle_rtp_data

        async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
            self.packets += 1
            self.numbered += transport_sequence_number(data, ext_id) is not None
            await original(data, arrival_time_ms=arrival_time_ms)

        transport._handle_rtp_data = handle_rtp_data


@pytest.mark.parametrize("kept", [True, False], ids=["kept", "dropped"])
async def test_transport_cc_is_sent_only_when_the_answer_keeps_it_and_its_feedback_is_read(kept):
    call = MediaCall()
    try:
        await call.publishing("patient")
        doctor = call.join("doctor", publish=False)
        browser = call.browsers["doctor"]
        accepted: dict[str, int] = {}
        if kept:  # as Chromium answers (aiortc drops it)
            browser.pc.createAnswer = answer_with_transport_cc(browser.pc, lambda: browser.offer, accepted)
        offer = await call.negotiate("doctor")
        ext_id = int(next(line for line in offer.splitlines() if line.endswith(" " + TRANSPORT_CC_URI))
                     .split()[0][len("a=extmap:"):])
        counted = NumberedPackets(browser, ext_id)
        await call.receives("doctor", "patient")
        await eventually(lambda: counted.packets >= 50)

        downlink = call.room.forwarding_summary()["doctor"]["downlink"]
        if kept:
            assert set(accepted.values()) == {ext_id} and len(accepted) == 2
            assert counted.numbered == counted.packets  # every packet sent on the transport numbered
            (generator,) = feedback_generators(browser.pc)
            await eventually(lambda: generator.feedbacks >= 3 and
                             (call.room.forwarding_summary()["doctor"]["downlink"]["transport_cc"] or {})
                             .get("feedbacks", 0) >= 3, what="feedback sent and read")
        else:
            assert counted.numbered == 0 and downlink["transport_cc"] is None
        assert doctor.stats.answers_rejected == 0
    finally:
        await call.close()


# --- failing and closing ---------------------------------------------------------------------------------------------


async def test_a_failed_connection_is_reported_and_a_closed_peer_refuses_to_offer(peers):
    peer, calls = peers.peer()
    browser = peers.browser(publish=True)
    offer = await peer.create_offer()
    await peer.apply_answer(await browser.unreachable_answer(offer))
    await eventually(lambda: calls.failed, what="the failure reported")
    assert calls.failed == [peer] and calls.connected == 0 and calls.started == []

    await peer.close()
    await peer.close()  # once is enough; again is harmless
    assert peer.closed and peer.pc.connectionState == "closed" and calls.failed == [peer]
    with pytest.raises(RuntimeError, match="peer closed"):
        await peer.create_offer()


async def test_closing_a_connected_peer_stops_its_tracks_and_downtracks_without_reporting_a_failure(peers):
    peer, calls = peers.peer()
    browser = peers.browser(publish=True)
    peer.claim_slot("patient")
    await browser.negotiate(peer)
    await eventually(lambda: len(calls.started) == 2 and all(d.started for d in peer.pairs[0].downtracks.values()))
    await peer.close()
    assert all(t.stopped for t in calls.started)
    assert all(d.stopped for d in peer.pairs[0].downtracks.values())
    await eventually(lambda: browser.pc.connectionState == "closed", what="the browser seeing it closed")
    assert calls.failed == []
