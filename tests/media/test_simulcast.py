"""SimulcastTrack: layers told apart by RID, one down-track fed from one layer, switches at keyframes.

Packets are built as Chrome sends simulcast (each layer on its own SSRC, the RID in a
header extension, RTX naming its layer's RID as repaired-rtp-stream-id) and handed to
the track as aiortc's DTLS transport would; what the down-track sends is read back
before SRTP.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
    unpack_remb_fci,
)

from media.aiortc_bridge import WirePacket
from media.downtrack import DownTrack
from media.keyframe_requests import MIN_INTERVAL_S
from media.published_track import PublishedTrack
from media.publisher_layers import LOWER_AFTER_S
from media.sdp_simulcast import REPAIRED_RID_URI, RID_URI
from media.simulcast import LAYER_SETTLED_S, LAYER_SILENT_S, LOWEST_WAIT_S, SimulcastTrack
from tests.support.wire import CapturingTransport

from .test_downtrack_fec import payload_of, seq_of

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=98, parameters={"apt": 97})
EXTENSIONS = [
    RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
    RTCRtpHeaderExtensionParameters(id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    RTCRtpHeaderExtensionParameters(id=10, uri=RID_URI),
    RTCRtpHeaderExtensionParameters(id=11, uri=REPAIRED_RID_URI),
]
RIDS = ("l", "m", "h")  # lowest first
DESCRIPTOR_BYTES = 4  # X, I with a 15-bit picture ID
SSRCS = {"l": 1001, "m": 1002, "h": 1003}
RTX_SSRCS = {"l": 2001, "m": 2002, "h": 2003}
SIZES = {"l": (320, 180), "m": (640, 360), "h": (1280, 720)}  # what each layer's keyframes say


class UplinkTransport(CapturingTransport):
    """Stands in for the publisher's RTCDtlsTransport: keeps the RTCP sent to the publisher."""

    def _register_rtp_receiver(self, receiver, parameters) -> None: ...
    def _unregister_rtp_receiver(self, receiver) -> None: ...

    def rtcp(self) -> list:
        return [p for data in self.sent for p in RtcpPacket.parse(data)]


class SimulcastPublisher:
    """Three layers as Chrome sends them: each frame in each layer, a keyframe where asked."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.extensions = HeaderExtensionsMap()
        self.extensions.configure(RTCRtpReceiveParameters(codecs=[VP8, RTX], headerExtensions=EXTENSIONS))
        self.seq = {rid: self.rng.randrange(1 << 16) for rid in RIDS}
        self.timestamp = {rid: self.rng.randrange(1 << 32) for rid in RIDS}
        self.picture = 0
        self.named = 0  # packets per layer that carry the RID (Chrome stops once acknowledged)
        self.payloads: dict[bytes, str] = {}  # payload past its descriptor -> layer

    def layer_of(self, payload: bytes) -> str:
        """Which layer a payload came from (down-tracks renumber the descriptor's picture IDs)."""
        return self.payloads[payload[DESCRIPTOR_BYTES:]]

    def frame(self, rid: str, *, keyframe: bool, packets: int = 2) -> list[bytes]:
        out = []
        self.picture += 1
        self.timestamp[rid] = (self.timestamp[rid] + 3000) & 0xFFFFFFFF
        for i in range(packets):
            descriptor = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80 | (self.picture >> 8) & 0x7F, self.picture & 0xFF])
            header = (_keyframe_header(*SIZES[rid]) if keyframe else b"\x01") if i == 0 else b""
            payload = descriptor + header + self.rng.randbytes(60)
            self.payloads[payload[DESCRIPTOR_BYTES:]] = rid
            packet = RtpPacket(payload_type=VP8.payloadType, marker=int(i == packets - 1),
                               sequence_number=self.seq[rid], timestamp=self.timestamp[rid], ssrc=SSRCS[rid],
                               payload=payload)
            packet.extensions.abs_send_time = (self.picture * 1000) & 0xFFFFFF
            if self.named < 100:
                packet.extensions.rtp_stream_id = rid
            self.seq[rid] = (self.seq[rid] + 1) & 0xFFFF
            out.append(packet.serialize(self.extensions))
        return out

    def rtx(self, rid: str, original: bytes, rtx_seq: int) -> bytes:
        packet = WirePacket.parse(original, self.extensions)
        rtx = RtpPacket(payload_type=RTX.payloadType, marker=packet.marker, sequence_number=rtx_seq,
                        timestamp=packet.timestamp, ssrc=RTX_SSRCS[rid],
                        payload=packet.sequence_number.to_bytes(2, "big") + packet.payload)
        rtx.extensions.repaired_rtp_stream_id = rid
        return rtx.serialize(self.extensions)


def _keyframe_header(width: int, height: int) -> bytes:
    """A VP8 keyframe's frame tag (P bit clear), start code and size (RFC 6386 section 9.1)."""
    return b"\x00\x00\x00\x9d\x01\x2a" + width.to_bytes(2, "little") + height.to_bytes(2, "little")


def make_track(transport: UplinkTransport) -> SimulcastTrack:
    parameters = RTCRtpReceiveParameters(codecs=[VP8, RTX], headerExtensions=EXTENSIONS, rtcp=RTCRtcpParameters())

    def layer(rid: str) -> PublishedTrack:
        return PublishedTrack(participant_id="patient", kind="video", transport=transport, parameters=parameters,
                              rtcp_ssrc=7, rid=rid)

    return SimulcastTrack(participant_id="patient", transport=transport, parameters=parameters, rids=RIDS,
                          make_layer=layer, rtcp_ssrc=7)


async def started_downtrack() -> tuple[DownTrack, CapturingTransport]:
    downtrack = DownTrack(subscriber_id="s", kind="video", ssrc=5555, rtx_ssrc=6666)
    transport = CapturingTransport()
    await downtrack.start(transport, RTCRtpSendParameters(codecs=[VP8, RTX], headerExtensions=EXTENSIONS[:2],
                                                          muxId="3", rtcp=RTCRtcpParameters(cname="x")))
    return downtrack, transport


async def send(track: SimulcastTrack, publisher: SimulcastPublisher, datagrams: list[bytes]) -> None:
    for data in datagrams:
        await track._handle_rtp_packet(WirePacket.parse(data, publisher.extensions), arrival_time_ms=0)


async def all_layers(track: SimulcastTrack, publisher: SimulcastPublisher, *, keyframe: tuple[str, ...] = (),
                     rids: tuple[str, ...] = RIDS) -> None:
    for rid in rids:
        await send(track, publisher, publisher.frame(rid, keyframe=rid in keyframe))


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The monotonic clock the track and its layers read, stepped by hand."""
    now = [1000.0]
    monkeypatch.setattr("media.simulcast.time.monotonic", lambda: now[0])
    monkeypatch.setattr("media.published_track.time.monotonic", lambda: now[0])
    return now


async def run_layers(track: SimulcastTrack, publisher: SimulcastPublisher, clock: list[float], seconds: float,
                     rids: tuple[str, ...] = RIDS) -> None:
    """Every layer in `rids` at 10 frames a second, the track's watch running."""
    for _ in range(round(seconds * 10)):
        clock[0] += 0.1
        await all_layers(track, publisher, rids=rids)
        track.check_layers(clock[0])


async def settled_on_top(track: SimulcastTrack, publisher: SimulcastPublisher, clock: list[float],
                         downtrack: DownTrack) -> None:
    """A down-track starts on (and is meant for) the lowest layer; raised to the top (as its
    downlink controller does when the link has room), it moves there once that has settled."""
    assert track.feeding(downtrack) == 0 and downtrack.layer == 0
    downtrack.select_layer(2)
    await run_layers(track, publisher, clock, LAYER_SETTLED_S + 0.5)
    await all_layers(track, publisher, keyframe=("h",))
    assert track.feeding(downtrack) == 2


async def downtrack_on_top(clock: list[float]) -> tuple[UplinkTransport, SimulcastTrack, SimulcastPublisher,
                                                        DownTrack, CapturingTransport]:
    """A track with all three layers arriving and a started down-track settled on its top layer."""
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    await all_layers(track, publisher, keyframe=RIDS)
    downtrack, to_subscriber = await started_downtrack()
    downtrack.attach(track)
    await settled_on_top(track, publisher, clock, downtrack)
    return upstream, track, publisher, downtrack, to_subscriber


def plis(transport: UplinkTransport) -> list[int]:
    return [p.media_ssrc for p in transport.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]


async def test_layers_are_told_apart_by_rid_and_then_by_ssrc():
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    await all_layers(track, publisher, keyframe=RIDS)
    publisher.named = 100  # acknowledged: no more RIDs on the wire
    await all_layers(track, publisher)
    assert [layer.rid if layer else None for layer in track.layers] == list(RIDS)
    assert [layer.packets_received if layer else 0 for layer in track.layers] == [4, 4, 4]
    assert [layer.media_ssrc if layer else None for layer in track.layers] == [SSRCS[r] for r in RIDS]
    # a stream no RID ever named is not guessed at
    stranger = RtpPacket(payload_type=VP8.payloadType, sequence_number=1, timestamp=1, ssrc=999, payload=b"\x10x")
    await send(track, publisher, [stranger.serialize(publisher.extensions)])
    assert track.unrouted == 1
    await track.stop()


async def test_a_downtrack_moves_up_to_a_settled_top_layer_and_down_at_the_lower_ones_keyframe(clock):
    upstream, track, publisher, downtrack, to_subscriber = await downtrack_on_top(clock)
    await all_layers(track, publisher)
    to_subscriber.sent[:] = [d for d in to_subscriber.sent if publisher.layer_of(payload_of(d)) == "h"]
    assert downtrack.layer_switches == 1

    downtrack.select_layer(0)
    assert downtrack.layer == 0 and track.feeding(downtrack) == 2  # until layer 0's keyframe
    clock[0] += MIN_INTERVAL_S + 0.1  # keyframe requests are spaced (the loop reads this clock too)
    for _ in range(3):
        await asyncio.sleep(0)
    assert SSRCS["l"] in plis(upstream)
    await all_layers(track, publisher)
    sent_before = len(to_subscriber.sent)
    assert {publisher.layer_of(payload_of(d)) for d in to_subscriber.sent} == {"h"}
    await all_layers(track, publisher, keyframe=("l",))
    await all_layers(track, publisher)
    after = to_subscriber.sent[sent_before:]
    assert [publisher.layer_of(payload_of(d)) for d in after] == ["l"] * 4  # from its keyframe on
    assert track.feeding(downtrack) == 0 and downtrack.layer_name == "l" and downtrack.layer_switches == 2
    # the VP8 picture IDs too: the first of layer l's follows the last of h's sent
    pids = [(payload_of(d)[2] & 0x7F) << 8 | payload_of(d)[3] for d in to_subscriber.sent]
    switch_at = sent_before
    assert pids[switch_at] == (pids[switch_at - 1] + 1) & 0x7FFF
    # one stream for the subscriber: its numbers run on without a gap across the switch
    seqs = [seq_of(d) for d in to_subscriber.sent[sent_before - 2:]]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), seqs
    await track.stop()
    assert downtrack.source is None


async def test_a_paused_downtrack_resumes_on_the_layer_selected_not_the_old_ones_keyframe(clock):
    """Paused at h, brought back at l: h's keyframe (asked for by others, or first to come) must not
    restart it; a 720p keyframe alone floods the narrow link it was paused for."""
    upstream, track, publisher, downtrack, to_subscriber = await downtrack_on_top(clock)
    downtrack.pause()
    downtrack.select_layer(0)
    assert track.feeding(downtrack) == 0  # moved at once: nothing of it is on screen
    downtrack.resume()
    sent_before = len(to_subscriber.sent)
    await all_layers(track, publisher, keyframe=("h",))
    await all_layers(track, publisher)
    assert to_subscriber.sent[sent_before:] == []  # h's keyframe came first: not carried
    await all_layers(track, publisher, keyframe=("l",))
    after = to_subscriber.sent[sent_before:]
    assert after and {publisher.layer_of(payload_of(d)) for d in after} == {"l"}
    await track.stop()


async def test_a_subscriber_there_before_the_layers_starts_on_the_lowest_not_the_first_to_come(clock):
    """A browser's larger layers come and go in a call's first seconds; its lowest stays."""
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    early, _ = await started_downtrack()
    early.attach(track)
    # the browser probes on layer l's RTX before any of l's media: that is not l arriving
    unsent = publisher.frame("l", keyframe=False)
    await send(track, publisher, [publisher.rtx("l", unsent[0], rtx_seq=1)])
    await all_layers(track, publisher, keyframe=("m",), rids=("m",))
    assert track.feeding(early) is None
    clock[0] += 0.1
    await all_layers(track, publisher, keyframe=("l",), rids=("l",))
    assert track.feeding(early) == 0
    await track.stop()


async def test_a_subscriber_takes_a_larger_layer_when_the_lowest_does_not_come(clock):
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    downtrack, to_subscriber = await started_downtrack()
    downtrack.attach(track)
    await all_layers(track, publisher, keyframe=("m",), rids=("m",))
    await run_layers(track, publisher, clock, LOWEST_WAIT_S / 2, rids=("m",))
    assert track.feeding(downtrack) is None
    await run_layers(track, publisher, clock, LOWEST_WAIT_S, rids=("m",))
    assert track.feeding(downtrack) == 1
    await all_layers(track, publisher, keyframe=("m",), rids=("m",))
    assert publisher.layer_of(payload_of(to_subscriber.sent[-1])) == "m"
    await track.stop()


async def test_a_retransmission_on_a_layers_rtx_reaches_the_downtrack_fed_by_that_layer(clock):
    upstream, track, publisher, downtrack, to_subscriber = await downtrack_on_top(clock)
    lost = publisher.frame("h", keyframe=False, packets=3)
    await send(track, publisher, [lost[0], lost[2]])
    await send(track, publisher, [publisher.rtx("h", lost[1], rtx_seq=40)])
    got = [payload_of(d) for d in to_subscriber.sent]
    assert WirePacket.parse(lost[1], publisher.extensions).payload in got
    top = track.layers[2]
    assert top is not None and top.nack_stats["recovered"] == 1
    await track.stop()


async def test_a_layer_the_publisher_stops_sending_is_left_for_the_best_still_arriving(clock):
    upstream, track, publisher, downtrack, to_subscriber = await downtrack_on_top(clock)
    # the publisher's uplink narrows: its encoder drops the top layer
    plis_before = len(plis(upstream))
    for _ in range(3):
        clock[0] += LAYER_SILENT_S / 2
        await all_layers(track, publisher, rids=("l", "m"))
        track.check_layers(clock[0])
    assert track.layer_rates(clock[0])[2] == 0.0
    # m's keyframe is asked for at once; the switch happens on it (nothing shown is cut short)
    for _ in range(3):
        await asyncio.sleep(0)
    assert SSRCS["m"] in plis(upstream)[plis_before:]
    assert track.feeding(downtrack) == 2
    await all_layers(track, publisher, keyframe=("m",), rids=("l", "m"))
    assert track.feeding(downtrack) == 1 and downtrack.layer == 2  # fed by m, still meant for h
    assert publisher.layer_of(payload_of(to_subscriber.sent[-1])) == "m"
    # the top layer comes back: up again at a keyframe, once it runs at the others' frame rate
    clock[0] += 0.1
    await all_layers(track, publisher, keyframe=("h",))  # its encoder's first frame: not yet
    assert track.feeding(downtrack) == 1
    for _ in range(25):  # 10 frames a second on every layer
        clock[0] += 0.1
        await all_layers(track, publisher)
        track.check_layers(clock[0])
    assert track.feeding(downtrack) == 1
    await all_layers(track, publisher, keyframe=("h",))
    assert track.feeding(downtrack) == 2
    assert publisher.layer_of(payload_of(to_subscriber.sent[-1])) == "h"
    await track.stop()


async def test_the_publisher_gets_one_remb_for_all_its_layers():
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    track.uplink_estimate = 2_000_000
    await all_layers(track, publisher, keyframe=RIDS)
    await track._send_remb()
    rembs = [p for p in upstream.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]
    assert len(rembs) == 1
    bitrate, ssrcs = unpack_remb_fci(rembs[0].fci)
    assert sorted(ssrcs) == sorted(SSRCS.values()) and abs(bitrate - 2_000_000) < 2_000_000 * 0.01
    # a layer never sends one of its own
    layer = track.layers[0]
    assert layer is not None
    await layer._send_remb()
    assert len([p for p in upstream.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]) == 1
    await track.stop()


async def test_taps_get_the_best_layer_arriving_as_one_stream(clock):
    """Recording and processors must not wait for the top layer (a browser adds it late) nor
    lose the picture when the publisher drops it."""
    class Tap:
        def __init__(self) -> None:
            self.packets: list[tuple[int, int, bytes]] = []  # (ssrc, seq, payload)

        def on_packet(self, packet, codec, arrived_at) -> None:
            self.packets.append((packet.ssrc, packet.sequence_number, packet.payload))

        def close(self) -> None: ...

    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    tap = Tap()
    track.add_tap(tap)  # before any layer arrived
    await all_layers(track, publisher, keyframe=("l", "m"), rids=("l", "m"))  # no top layer yet
    track.check_layers(clock[0])
    await all_layers(track, publisher, keyframe=("l",), rids=("l", "m"))
    assert {publisher.layer_of(p) for _, _, p in tap.packets} == {"l"}  # the lowest to start with
    await run_layers(track, publisher, clock, LAYER_SETTLED_S + 0.5, rids=("l", "m"))
    await all_layers(track, publisher, keyframe=("m",), rids=("l", "m"))
    assert publisher.layer_of(tap.packets[-1][2]) == "m"
    # the top layer starts: the taps move up at a keyframe once it has settled
    await run_layers(track, publisher, clock, LAYER_SETTLED_S + 0.5)
    await all_layers(track, publisher, keyframe=("h",))
    assert publisher.layer_of(tap.packets[-1][2]) == "h"
    # the publisher drops it again: back to m at m's next keyframe
    await run_layers(track, publisher, clock, 1.0, rids=("l", "m"))
    await all_layers(track, publisher, keyframe=("m",), rids=("l", "m"))
    assert publisher.layer_of(tap.packets[-1][2]) == "m"
    # one stream for the taps: one SSRC, numbers running on without a gap
    assert len({ssrc for ssrc, _, _ in tap.packets}) == 1
    seqs = [seq for _, seq, _ in tap.packets]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:])), seqs
    assert track.summary()["tap_layer"] == "m" and track.summary()["tap_layer_switches"] == 3
    track.remove_tap(tap)
    before = len(tap.packets)
    await all_layers(track, publisher, keyframe=RIDS)
    assert len(tap.packets) == before
    await track.stop()


async def test_a_tap_added_while_the_layers_run_starts_on_the_best_settled_one(clock):
    """A recording started mid-call opens on the top layer, not a few frames of the lowest."""
    got: list[bytes] = []

    class Tap:
        def on_packet(self, packet, codec, arrived_at) -> None:
            got.append(packet.payload)

        def close(self) -> None: ...

    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    await all_layers(track, publisher, keyframe=RIDS)
    await run_layers(track, publisher, clock, LAYER_SETTLED_S + 0.5)
    track.add_tap(Tap())
    await all_layers(track, publisher, keyframe=("l",))
    await all_layers(track, publisher, keyframe=("h",))
    await all_layers(track, publisher)
    assert got and {publisher.layer_of(p) for p in got} == {"h"}
    assert track.summary()["tap_layer_switches"] == 0
    await track.stop()


async def test_the_summary_adds_the_layers_up_and_keeps_each():
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    await all_layers(track, publisher, keyframe=("l", "m"), rids=("l", "m"))  # no top layer (yet)
    summary = track.summary()
    assert summary["packets"] == 4 and summary["nack"]["nacked"] == 0 and summary["codec"] == "video/VP8"
    assert summary["simulcast"]["h"] is None and summary["simulcast"]["l"]["packets"] == 2
    await track.stop()


async def test_a_tile_drawn_small_gets_the_layer_that_covers_it_from_the_keyframes_sizes(clock):
    upstream, track, publisher, downtrack, to_subscriber = await downtrack_on_top(clock)
    assert track.layer_for_view((300, 170)) == 0
    assert track.layer_for_view((600, 340)) == 1
    assert track.layer_for_view((700, 340)) == 2
    assert downtrack.layer_ceiling == 2  # the page has said nothing: the top
    downtrack.set_view((600, 340))
    track.check_layers(clock[0])
    assert downtrack.layer == 1  # left at the watch's next round, at m's next keyframe
    rates = downtrack.layer_rates(clock[0])
    assert rates[0] > 0 and rates[1] > 0 and rates[2] == 0  # h is not the controller's to raise to
    await all_layers(track, publisher, keyframe=("m",))
    await all_layers(track, publisher)
    assert track.feeding(downtrack) == 1
    assert downtrack.summary()["view"] == [600, 340]
    downtrack.set_view((1280, 720))  # the tile grew: the controller may raise it again
    assert downtrack.layer == 1 and downtrack.layer_rates(clock[0])[2] > 0
    await track.stop()


async def test_the_publisher_is_asked_only_for_layers_a_tile_or_a_tap_needs(clock):
    upstream, track, publisher, downtrack, to_subscriber = await downtrack_on_top(clock)
    asked: list[tuple[str, ...]] = []
    track.on_active_layers = asked.append
    downtrack.set_view((300, 170))
    await run_layers(track, publisher, clock, LOWER_AFTER_S + 0.5)
    assert asked == [("l",)]
    assert track.summary()["publisher_layers"] == ["l"]
    downtrack.set_view((640, 360))  # the tile grew: m back at once
    track.check_layers(clock[0])
    assert asked == [("l",), ("l", "m")]
    downtrack.set_view(None)  # a page that says nothing takes the top
    track.check_layers(clock[0])
    assert asked[-1] == ("l", "m", "h")
    await track.stop()


async def test_with_nobody_watching_only_the_lowest_layer_is_sent_unless_tapped(clock):
    upstream = UplinkTransport()
    track = make_track(upstream)
    publisher = SimulcastPublisher()
    asked: list[tuple[str, ...]] = []
    track.on_active_layers = asked.append
    await run_layers(track, publisher, clock, LOWER_AFTER_S + 0.5)
    assert asked == [("l",)]  # a patient waiting for the doctor: its phone's smallest layer only

    class Tap:
        def on_packet(self, packet, codec, arrived_at) -> None: ...
        def close(self) -> None: ...

    track.add_tap(Tap())  # a recording or a processor takes the best
    track.check_layers(clock[0])
    assert asked == [("l",), ("l", "m", "h")]
    await track.stop()
