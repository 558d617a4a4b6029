"""MediaRoom (media/room.py) with real peers: every participant's "browser" is an aiortc peer
connection on loopback answering the server's offers (tests/support/browser_peer.py), the
test playing the control plane (negotiating when the room asks, tests/support/media_call.py).

What the room promises its control plane: a publisher's tracks reach every subscriber in
that publisher's slot pair, announced by `renegotiation_needed` (a new pair) or
`tracks_changed` (a pair reused); a late joiner's first offer already has what is being
published; a publisher leaving idles its pairs elsewhere without renegotiation; views reach
the down-tracks; taps see a track; a failing peer is reported. (The edges a subscribe makes
and a leave ends, with fake sources and sinks: tests/media/test_packet_path.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Optional

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

import media.publisher_layers
from loadtest.simulcast_sdp import add_simulcast_to_answer, offered_simulcast
from media.sdp_tweaks import section_mid, split_sections
from media.simulcast import SimulcastTrack
from tests.support.browser_peer import eventually
from tests.support.media_call import MediaCall


@pytest.fixture
async def call() -> AsyncIterator[MediaCall]:
    c = MediaCall()
    yield c
    await c.close()


def pair_map(call: MediaCall, subscriber_id: str, index: int, publisher_id: Optional[str]) -> dict:
    """What the subscriber's page is told its `index`th slot pair carries."""
    pair = call.peer(subscriber_id).pairs[index]
    return {pair.mid(kind): ({"participant": publisher_id, "kind": kind} if publisher_id else None)
            for kind in ("audio", "video")}


def msid_streams(sdp: str) -> dict[str, str]:
    """mid -> the msid stream of that section."""
    return {mid: next(line.split()[0][len("a=msid:"):] for line in section if line.startswith("a=msid:"))
            for section in split_sections(sdp)[1] if (mid := section_mid(section)) is not None}


def with_simulcast(answer: str, offer: str) -> str:
    """The answer as Chrome sends it when asked for layers (aiortc answers one stream)."""
    (offered,) = offered_simulcast(offer).values()
    return add_simulcast_to_answer(answer, offered)


class CountingTap:
    """A PacketTap (media/taps.py) that counts what it is handed."""

    def __init__(self) -> None:
        self.packets = 0
        self.mime_types: set[str] = set()
        self.closed = False

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None:
        self.packets += 1
        self.mime_types.add(codec.mimeType.lower())

    def close(self) -> None:
        self.closed = True


# --- a publisher's tracks starting ------------------------------------------------------------------------


async def test_a_started_track_reaches_every_subscriber_in_its_publishers_slot_pair(call):
    doctor = call.join("doctor", publish=False)
    expert = call.join("expert", publish=False)
    assert doctor.pairs == [] and expert.pairs == []  # nothing to receive yet

    patient = await call.publishing("patient")

    # one new pair each, for both of the patient's tracks: one renegotiation each, nothing else yet
    await eventually(lambda: len(call.events.of("renegotiation_needed")) == 2)
    assert sorted(call.events.of("renegotiation_needed")) == [("doctor",), ("expert",)]
    assert call.events.of("tracks_changed") == []
    assert call.events.of("renegotiation_needed", "patient") == []  # it receives no one
    for subscriber in (doctor, expert):
        (pair,) = subscriber.pairs
        assert pair.publisher_id == "patient"
        for kind in ("audio", "video"):
            assert pair.downtracks[kind].source is patient.published[kind]

    for subscriber_id in ("doctor", "expert"):
        await call.negotiate(subscriber_id)
        assert call.peer(subscriber_id).track_map() == pair_map(call, subscriber_id, 0, "patient")
    await asyncio.gather(call.receives("doctor", "patient"), call.receives("expert", "patient"))


async def test_a_camera_starting_after_the_microphone_is_announced_in_the_pair_already_negotiated(call):
    doctor = call.join("doctor", publish=False)
    patient = call.join("patient", publish=True)
    page = call.browsers["patient"]
    camera, page.video = page.video, None  # no camera yet (e.g. permission pending): the microphone only
    await call.negotiate("patient")
    await eventually(lambda: "audio" in patient.published, what="the microphone's track started")
    assert call.events.calls == [("renegotiation_needed", "doctor")]
    await call.negotiate("doctor")
    await eventually(lambda: call.frames("doctor", "patient", "audio") >= 5, what="the doctor hearing the patient")
    call.events.clear()

    page.video = camera
    await call.negotiate("patient")
    await eventually(lambda: "video" in patient.published, what="the camera's track started")
    # the pair has both mids already: the doctor's page is told, nothing renegotiated
    assert call.events.calls == [("tracks_changed", "doctor", pair_map(call, "doctor", 0, "patient"))]
    assert doctor.pairs[0].downtracks["video"].source is patient.published["video"]
    await call.receives("doctor", "patient")
    assert doctor.stats.renegotiations == 1


async def test_a_subscriber_joining_later_gets_the_tracks_already_published_in_its_first_offer(call):
    await call.publishing("patient")
    call.events.clear()

    doctor = call.join("doctor", publish=False)
    (pair,) = doctor.pairs  # claimed at once, before any offer
    assert pair.publisher_id == "patient"
    await call.negotiate("doctor")
    assert doctor.track_map() == pair_map(call, "doctor", 0, "patient")
    await call.receives("doctor", "patient")
    assert call.events.calls == []  # its first offer had it all: no renegotiation, no tracks message


async def test_a_publisher_leaving_idles_its_pair_without_renegotiation_and_the_next_one_reuses_it(call):
    await call.publishing("patient")
    doctor = call.join("doctor", publish=False)
    await call.negotiate("doctor")
    await call.receives("doctor", "patient")
    (pair,) = doctor.pairs
    mids = {kind: pair.mid(kind) for kind in ("audio", "video")}
    call.events.clear()

    await call.room.remove_peer("patient")
    assert call.events.calls == [("tracks_changed", "doctor", pair_map(call, "doctor", 0, None))]
    assert pair.publisher_id is None
    assert all(d.source is None for d in pair.downtracks.values())  # carry nothing
    assert doctor.stats.renegotiations == 1

    call.events.clear()
    await call.publishing("patient-2", seed=7)
    assert doctor.pairs == [pair]  # the idle pair, the same mids
    assert call.events.of("renegotiation_needed", "doctor") == []
    # what the doctor's page is told instead (once per track started), on the mids it already has
    changes = call.events.of("tracks_changed", "doctor")
    expected = ("doctor", {mids["audio"]: {"participant": "patient-2", "kind": "audio"},
                           mids["video"]: {"participant": "patient-2", "kind": "video"}})
    assert changes and all(change == expected for change in changes)
    await call.receives("doctor", "patient-2")  # on the mids it had, with no new offer
    assert doctor.stats.renegotiations == 1


async def test_renegotiation_is_asked_for_only_when_a_subscriber_needs_another_pair(call):
    await call.publishing("patient")
    doctor = call.join("doctor", publish=False)
    await call.negotiate("doctor")
    call.events.clear()

    expert = await call.publishing("expert", seed=3)
    # the expert got the patient in its first offer; the others need a second pair: once each, for both tracks
    assert sorted(call.events.of("renegotiation_needed")) == [("doctor",), ("patient",)]
    assert call.events.of("tracks_changed") == []
    assert [p.publisher_id for p in doctor.pairs] == ["patient", "expert"]
    assert [p.publisher_id for p in expert.pairs] == ["patient"]
    offer = await call.negotiate("doctor")
    await call.negotiate("patient")
    assert doctor.track_map() == {**pair_map(call, "doctor", 0, "patient"), **pair_map(call, "doctor", 1, "expert")}
    # one msid stream per participant: the browser lip-syncs each one's audio with that one's video only
    streams = msid_streams(offer)
    assert [streams[pair.mid(kind)] for pair in doctor.pairs for kind in ("audio", "video")] == [
        doctor.pairs[0].stream_id] * 2 + [doctor.pairs[1].stream_id] * 2
    assert doctor.pairs[0].stream_id != doctor.pairs[1].stream_id
    await asyncio.gather(call.receives("doctor", "patient"), call.receives("doctor", "expert"),
                         call.receives("expert", "patient"), call.receives("patient", "expert"))
    assert len(call.events.of("renegotiation_needed")) == 2


# --- views and layers ------------------------------------------------------------------------------------


async def test_views_reach_the_downtracks_and_choose_the_layers_a_publisher_is_asked_for(call, monkeypatch):
    monkeypatch.setattr(media.publisher_layers, "LOWER_AFTER_S", 0.3)  # hysteresis: seconds in a real call
    doctor = call.join("doctor", publish=False)
    expert = call.join("expert", publish=False)
    call.room.set_views("doctor", {"patient": (0, 0)})  # no one of that id here yet: left out
    patient = call.join("patient", publish=True)
    # before the patient's track starts: kept for it (the subscriber's own id and absent ones left out)
    call.room.set_views("expert", {"patient": (0, 0), "expert": (640, 360), "nobody": (1, 1)})
    await call.negotiate("patient", edit=with_simulcast)
    await eventually(lambda: set(patient.published) == {"audio", "video"})
    camera = patient.published["video"]
    assert isinstance(camera, SimulcastTrack) and camera.rids == ("l", "m", "h")

    doctors, experts = doctor.pairs[0].downtracks["video"], expert.pairs[0].downtracks["video"]
    assert doctors.source is camera and experts.source is camera
    assert doctors.view is None and doctors.layer_ceiling == 2  # not told: the top
    assert experts.view == (0, 0) and experts.layer_ceiling == 0  # hidden: the lowest

    call.room.set_views("doctor", {"patient": (0, 0)})
    assert doctors.view == (0, 0) and doctors.layer_ceiling == 0
    # hidden by every viewer: the patient's camera is told to send only its lowest layer
    await eventually(lambda: call.events.of("publisher_layers"), what="the publisher told its layers")
    assert call.events.of("publisher_layers") == [("patient", ("l",))]

    call.room.set_views("expert", {"patient": (1280, 720)})
    assert experts.view == (1280, 720) and experts.layer_ceiling == 2  # no layer's size known yet: the top
    await eventually(lambda: len(call.events.of("publisher_layers")) == 2, what="the layers back")
    assert call.events.of("publisher_layers")[-1] == ("patient", ("l", "m", "h"))
    assert call.room.forwarding_summary()["expert"]["receiving"]["patient:video"]["view"] == [1280, 720]
    assert doctors.view == (0, 0)  # each subscriber's own

    call.room.set_views("nobody", {"patient": (1, 1)})  # a subscriber that is not here: nothing


# --- leaving -------------------------------------------------------------------------------------------------


async def test_remove_peer_closes_the_peer_and_its_downtracks_leave_the_publishers_tracks(call):
    patient = await call.publishing("patient")
    doctor = call.join("doctor", publish=False)
    await call.negotiate("doctor")
    await call.receives("doctor", "patient")
    downtracks = list(doctor.pairs[0].downtracks.values())
    assert all(d in patient.published[d.kind].downtracks for d in downtracks)
    call.events.clear()

    await call.room.remove_peer("doctor")
    assert doctor.closed and doctor.pc.connectionState == "closed"
    assert all(d.stopped and d.source is None for d in downtracks)
    assert all(d not in patient.published[d.kind].downtracks for d in downtracks)
    assert "doctor" not in call.room.peers and set(call.room.forwarding_summary()) == {"patient"}
    assert call.events.calls == []  # it published nothing: no one's tracks changed
    await eventually(lambda: call.browsers["doctor"].pc.connectionState == "closed",
                     what="the doctor's browser seeing its connection closed")

    await call.room.remove_peer("doctor")  # again, or someone never here: nothing
    await call.room.remove_peer("nobody")
    assert not patient.closed
    with pytest.raises(ValueError, match="already has a peer"):
        call.room.create_peer("patient", publish=True, subscribe=True)


# --- taps ------------------------------------------------------------------------------------------------------


async def test_taps_see_a_track_from_when_it_starts_until_removed_or_its_publisher_leaves(call):
    early, late, removed = CountingTap(), CountingTap(), CountingTap()
    call.room.add_tap("patient", "video", early)  # before the patient is even here
    patient = await call.publishing("patient")
    call.room.add_tap("patient", "audio", late)
    call.room.add_tap("patient", "audio", removed)
    await eventually(lambda: early.packets >= 10 and late.packets >= 10 and removed.packets >= 10,
                     what="the taps handed packets")
    assert early.mime_types == {"video/vp8"} and late.mime_types == {"audio/opus"}

    call.room.remove_tap("patient", "audio", removed)
    assert removed.closed and not late.closed
    counted = removed.packets
    before = late.packets
    await eventually(lambda: late.packets >= before + 10, what="the remaining tap handed more")
    assert removed.packets == counted

    await call.room.remove_peer("patient")
    assert early.closed and late.closed
    assert patient.closed


# --- counters ----------------------------------------------------------------------------------------------------


async def test_forwarding_summary_counts_what_each_peer_publishes_and_receives(call):
    await call.publishing("patient")
    call.join("doctor", publish=False)
    await call.negotiate("doctor")
    await call.receives("doctor", "patient")

    summary = call.room.forwarding_summary()
    assert set(summary) == {"patient", "doctor"}
    for entry in summary.values():
        assert set(entry) == {"published", "downlink", "receiving"}
    assert set(summary["patient"]["published"]) == {"audio", "video"} and summary["patient"]["receiving"] == {}
    assert summary["patient"]["published"]["video"]["packets"] > 0
    assert summary["patient"]["published"]["video"]["codec"].lower() == "video/vp8"
    assert summary["doctor"]["published"] == {}
    assert set(summary["doctor"]["receiving"]) == {"patient:audio", "patient:video"}
    assert all(r["packets"] > 0 for r in summary["doctor"]["receiving"].values())
    assert {"estimate_kbps", "video_kbps", "audio_kbps", "pauses"} <= set(summary["doctor"]["downlink"])

    await call.room.remove_peer("patient")  # an idle pair is not listed
    assert call.room.forwarding_summary()["doctor"]["receiving"] == {}


# --- failure -------------------------------------------------------------------------------------------------------


async def test_a_peer_whose_connection_fails_is_reported_once_and_closing_one_is_not(call):
    patient = call.join("patient", publish=True)
    doctor = call.join("doctor", publish=False)
    offer = await patient.create_offer()
    await patient.apply_answer(await call.browsers["patient"].unreachable_answer(offer))
    await eventually(lambda: call.events.of("connection_failed"), what="the failure reported")
    assert call.events.of("connection_failed") == [("patient",)]
    assert patient.published == {} and doctor.pairs == []

    await call.room.remove_peer("patient")
    await call.room.remove_peer("doctor")  # closed, not failed
    await asyncio.sleep(0.1)
    assert call.events.of("connection_failed") == [("patient",)]
