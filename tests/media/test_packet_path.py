"""The packet path's shape (media/packet_path.py): sources and sinks through their Protocols,
each edge made and ended by `connect` / `disconnect`, the calls the room makes.

A fake source stands in for any `DownTrackSource` and a fake sink for any `PacketSink`;
each real class is driven against the other side's fake: a DownTrack as the sink of a fake
source, PublishedTrack, SimulcastTrack and WatermarkVariant as the sources of a fake sink,
and MediaRoom making and ending the edges. (mypy checks the real classes against the
Protocols: the room connects DownTracks to them.)
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtp import RtpPacket

from loadtest.forwarding_rig import EXTENSIONS, RTX, VP8
from media.ice import IceConfig
from media.packet_path import DownTrackSource, connect, disconnect
from media.published_track import PublishedTrack
from media.room import MediaRoom
from media.rtp_clock import SenderReport
from media.variant_encoder import EncodedVariantFrame
from media.watermark_variant import WatermarkVariant
from tests.support.sinks import FakeSink
from tests.support.wire import CapturingTransport

from .test_downtrack_fec import seq_of, started_downtrack
from .test_simulcast import SimulcastPublisher, all_layers, make_track

MEDIA_SSRC = 4321


def vp8(seq: int, ts: int, *, keyframe: bool = False, ssrc: int = MEDIA_SSRC) -> RtpPacket:
    descriptor = bytes([0x10, 0x00 if keyframe else 0x01])  # S bit; the frame tag's P bit clear on a keyframe
    return RtpPacket(payload_type=VP8.payloadType, marker=1, sequence_number=seq, timestamp=ts, ssrc=ssrc,
                     payload=descriptor + bytes(100))


class FakeSource:
    """A DownTrackSource that hands each packet to its sinks, as a PublishedTrack does."""

    def __init__(self, name: str = "source") -> None:
        self.name = name
        self.sinks: list = []
        self.keyframe_requests = 0
        self.sender_report: Optional[SenderReport] = None

    def add_downtrack(self, downtrack) -> None:
        self.sinks = [*self.sinks, downtrack]

    def remove_downtrack(self, downtrack) -> None:
        self.sinks = [s for s in self.sinks if s is not downtrack]

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1

    def offered_bps(self, now: float) -> float:
        return 0.0

    async def emit(self, packet: RtpPacket, *, keyframe: bool = False) -> None:
        for sink in self.sinks:
            await sink.forward(packet, VP8, keyframe, 0, time.monotonic())


class UplinkTransport(CapturingTransport):
    def _register_rtp_receiver(self, receiver, parameters) -> None: ...
    def _unregister_rtp_receiver(self, receiver) -> None: ...


def published_track() -> PublishedTrack:
    return PublishedTrack(
        participant_id="patient", kind="video", transport=UplinkTransport(), rtcp_ssrc=1,
        parameters=RTCRtpReceiveParameters(
            codecs=[VP8, RTX], headerExtensions=EXTENSIONS, rtcp=RTCRtcpParameters(),
            encodings=[RTCRtpDecodingParameters(ssrc=MEDIA_SSRC, payloadType=VP8.payloadType)]))


# --- connect / disconnect, both sides fakes --------------------------------------------------

async def test_packets_flow_once_connected_and_stop_once_disconnected():
    source, sink = FakeSource(), FakeSink()
    await source.emit(vp8(1, 0))
    connect(source, sink)
    assert source.sinks == [sink] and sink.source is source and sink.feed is source
    await source.emit(vp8(2, 0))
    disconnect(sink)
    assert source.sinks == [] and sink.source is None and sink.feed is None
    await source.emit(vp8(3, 0))
    assert sink.received == [(2, False)]


async def test_a_sink_connected_to_another_source_gets_only_the_new_ones_packets():
    first, second, sink = FakeSource("first"), FakeSource("second"), FakeSink()
    connect(first, sink)
    await first.emit(vp8(1, 0))
    connect(second, sink)  # no disconnect in between: connecting moves it
    assert first.sinks == [] and second.sinks == [sink] and sink.source is second
    await first.emit(vp8(2, 0))
    await second.emit(vp8(100, 0))
    assert sink.received == [(1, False), (100, False)]


def test_connecting_again_or_a_stopped_sink_changes_nothing():
    source, sink = FakeSource(), FakeSink()
    connect(source, sink)
    connect(source, sink)
    assert source.sinks == [sink]
    stopped = FakeSink()
    stopped.stopped = True
    connect(source, stopped)
    assert source.sinks == [sink] and stopped.source is None


def test_disconnect_naming_another_source_leaves_the_edge():
    """What a source that stops calls for each of its sinks: one that moved on is not taken off."""
    first, second, sink = FakeSource(), FakeSource(), FakeSink()
    connect(second, sink)
    disconnect(sink, first)
    assert second.sinks == [sink] and sink.source is second
    disconnect(sink, second)
    assert second.sinks == [] and sink.source is None


# --- a DownTrack as the sink -------------------------------------------------------------------

async def test_a_downtrack_does_not_register_itself_with_a_source():
    downtrack, _ = await started_downtrack([VP8, RTX])
    source = FakeSource()
    downtrack.bind(source)  # its own side only
    assert source.sinks == [] and downtrack.source is source
    downtrack.unbind()
    assert downtrack.source is None


async def test_a_downtrack_sends_what_its_source_sends_and_moves_with_the_room():
    downtrack, wire = await started_downtrack([VP8, RTX])
    first, second = FakeSource("first"), FakeSource("second")
    connect(first, downtrack)
    await first.emit(vp8(500, 9000), keyframe=False)  # video starts at a keyframe
    assert wire.sent == []
    await first.emit(vp8(501, 9000, keyframe=True), keyframe=True)
    await first.emit(vp8(502, 12000))
    assert len(wire.sent) == 2

    disconnect(downtrack)
    assert first.sinks == [] and downtrack.source is None
    await first.emit(vp8(503, 15000))
    assert len(wire.sent) == 2

    connect(second, downtrack)
    await first.emit(vp8(504, 18000, keyframe=True), keyframe=True)  # not its source any more
    await second.emit(vp8(7000, 50, keyframe=True), keyframe=True)
    assert len(wire.sent) == 3
    assert (seq_of(wire.sent[2]) - seq_of(wire.sent[1])) & 0xFFFF == 1  # one stream for the subscriber

    downtrack.feed.request_keyframe()  # a PLI's way: to what feeds it, through the Protocol
    assert second.keyframe_requests == 1
    await downtrack.stop()
    assert second.sinks == [] and downtrack.source is None


# --- the real sources, feeding a fake sink ---------------------------------------------------------

async def test_a_published_track_feeds_a_connected_sink_until_disconnected_or_stopped():
    track = published_track()
    sink, other = FakeSink(), FakeSink()
    connect(track, sink)
    connect(track, other)
    assert track.downtracks == [sink, other]
    await track._handle_rtp_packet(vp8(10, 3000, keyframe=True), arrival_time_ms=0)
    disconnect(other)
    await track._handle_rtp_packet(vp8(11, 6000), arrival_time_ms=0)
    assert sink.received == [(10, True), (11, False)] and other.received == [(10, True)]
    await track._handle_rtp_packet(vp8(20, 9000, ssrc=MEDIA_SSRC + 1), arrival_time_ms=0)  # a new stream
    assert sink.restarts == 1 and other.restarts == 0
    await track.stop()
    assert track.downtracks == [] and sink.source is None


async def test_a_simulcast_track_feeds_a_connected_sink_from_one_layer():
    track = make_track(UplinkTransport())
    publisher = SimulcastPublisher()
    await all_layers(track, publisher, keyframe=("l", "m", "h"))
    sink = FakeSink()
    connect(track, sink)
    low = track.layers[0]
    assert low is not None
    assert sink.source is track and sink.feed is low and low.downtracks == [sink]  # the lowest, at once
    await all_layers(track, publisher, keyframe=("l",))
    assert len(sink.received) == 2 and sink.received[0][1]  # layer l's frame: two packets
    disconnect(sink)
    assert track.downtracks == [] and low.downtracks == [] and sink.feed is None
    await all_layers(track, publisher, keyframe=("l",))
    assert len(sink.received) == 2
    await track.stop()


async def test_a_watermark_variant_feeds_a_connected_sink_and_goes_idle_without_one():
    track = published_track()
    track.last_codec = VP8
    idle: list[WatermarkVariant] = []
    variant = WatermarkVariant(track, viewer_id="doctor", make_marker=lambda: lambda image, ms: None,
                               on_idle=idle.append)
    try:
        sink = FakeSink()
        variant._keyframe_wanted = False
        connect(variant, sink)
        assert variant.downtracks == [sink] and variant._keyframe_wanted  # a new viewer starts at a keyframe

        async def frame(ts: int) -> None:
            variant._queue(EncodedVariantFrame([b"\x10\x00" + bytes(50), b"\x00" + bytes(50)], keyframe=True),
                           ts, time.monotonic())
            if variant._sender is not None:
                await asyncio.wait_for(variant._sender, 1)

        await frame(3000)
        assert [keyframe for _, keyframe in sink.received] == [True, False]
        disconnect(sink)
        assert variant.downtracks == [] and idle == [variant] and sink.source is None
        await frame(6000)
        assert len(sink.received) == 2
    finally:
        variant.stop()


# --- the room makes and ends the edges ---------------------------------------------------------------

class FakePair:
    def __init__(self, publisher_id: str) -> None:
        self.publisher_id: Optional[str] = publisher_id
        self.downtracks = {"audio": FakeSink(), "video": FakeSink()}


class FakePeer:
    """What MediaRoom asks of a peer to wire a subscriber's slots (releasing one leaves it wired)."""

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        self.pairs: list[FakePair] = []
        self.published: dict = {}
        self.closed_while_fed: Optional[bool] = None
        self.watched: list[FakeSink] = []

    def claim_slot(self, publisher_id: str) -> tuple[FakePair, bool]:
        pair = self.slot_for(publisher_id)
        if pair is not None:
            return pair, False
        pair = FakePair(publisher_id)
        self.pairs.append(pair)
        return pair, True

    def slot_for(self, publisher_id: str) -> Optional[FakePair]:
        return next((p for p in self.pairs if p.publisher_id == publisher_id), None)

    def release_slot(self, publisher_id: str) -> Optional[FakePair]:
        pair = self.slot_for(publisher_id)
        if pair is not None:
            pair.publisher_id = None
        return pair

    def pair_track_map(self, pair: FakePair) -> dict:
        return {}

    async def close(self) -> None:
        self.closed_while_fed = any(sink.source is not None for sink in self.watched)


class NoEvents:
    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


class Chooser:
    def __init__(self) -> None:
        self.choice: Optional[DownTrackSource] = None

    def source_for(self, track: PublishedTrack, subscriber_id: str) -> Optional[DownTrackSource]:
        return self.choice


async def test_the_room_connects_moves_withholds_and_disconnects_a_subscribers_downtrack():
    chooser = Chooser()
    room = MediaRoom("r", IceConfig(), NoEvents(), sources=chooser)
    track = published_track()
    publisher, subscriber = FakePeer("patient"), FakePeer("doctor")
    room.peers.update({"patient": publisher, "doctor": subscriber})
    first, second = FakeSource("first"), FakeSource("second")

    chooser.choice = first
    room._subscribe(subscriber, track, notify=False)
    sink = subscriber.pairs[0].downtracks["video"]
    assert sink.source is first and first.sinks == [sink]
    await first.emit(vp8(1, 0))

    chooser.choice = second  # e.g. a viewer's marked copy instead of the track
    room._subscribe(subscriber, track, notify=False)
    assert sink.source is second and first.sinks == [] and second.sinks == [sink]
    await first.emit(vp8(2, 0))
    await second.emit(vp8(3, 0))
    assert [seq for seq, _ in sink.received] == [1, 3]

    chooser.choice = None  # withheld
    room._subscribe(subscriber, track, notify=False)
    assert sink.source is None and second.sinks == []

    chooser.choice = track
    room._subscribe(subscriber, track, notify=False)
    assert track.downtracks == [sink]
    publisher.watched = [sink]
    await room.remove_peer("patient")  # the room ends the edge, not the slot release nor the track
    assert sink.source is None and track.downtracks == [] and publisher.closed_while_fed is False
    await track.stop()
