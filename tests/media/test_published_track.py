"""PublishedTrack, the receive side of one published source, fed RTP as a browser puts it on the
wire (serialized, then parsed as the transport's router hands it on) and read back at its
subscribers (fake sinks), its taps and the RTCP it sends the publisher.

Its stages have their own tests (RTX unwrap, RED, uplink FEC, NACKs, reports, probes); these
check what the track decides between them and in which order: what is dropped and counted, what a
retransmission or a RED copy becomes and who gets it, which subscriber takes RED and which plain
Opus, keyframes, a new stream on a new SSRC, and that one broken subscriber or tap stops nobody else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Optional

import pytest
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    unpack_remb_fci,
)

from loadtest.forwarding_rig import EXTENSIONS, RED, RTX, RTX_RED, ULPFEC, VP8
from media import published_track as published_track_module
from media.aiortc_bridge import WirePacket
from media.packet_path import connect, disconnect
from media.published_track import PublishedTrack
from media.red import build_red
from media.video_fec import red_wrap
from tests.support.sinks import FakeSink
from tests.support.wire import CapturingTransport

# as Chrome negotiates them
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
AUDIO_RED = RTCRtpCodecParameters(mimeType="audio/red", clockRate=48000, channels=2, payloadType=63)
VIDEO_SSRC, VIDEO_RTX_SSRC, AUDIO_SSRC, NEW_SSRC = 0x1111_0001, 0x1111_0002, 0x2222_0001, 0x3333_0001
RTCP_SSRC = 7
FRAME = 960  # an Opus packet's 20 ms at 48 kHz
EXTENSIONS_MAP = HeaderExtensionsMap()
EXTENSIONS_MAP.configure(RTCRtpReceiveParameters(headerExtensions=EXTENSIONS))


# --- the wire ------------------------------------------------------------------------------------

def rtp(payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes, *, marker: bool = False,
        padding: int = 0, send_time: Optional[int] = None) -> WirePacket:
    """A packet serialized as the browser sends it and parsed as the publisher's transport does."""
    packet = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=seq & 0xFFFF,
                       timestamp=timestamp & 0xFFFFFFFF, ssrc=ssrc, payload=payload)
    packet.padding_size = padding
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = send_time
    return WirePacket.parse(packet.serialize(EXTENSIONS_MAP), EXTENSIONS_MAP)


def vp8_payload(picture_id: int, *, start: bool = True, keyframe: bool = False,
                size: Optional[tuple[int, int]] = None, body: int = 100) -> bytes:
    """Chrome's VP8 payload: descriptor with a 15-bit picture ID; on a frame's first packet the
    frame tag (P bit clear on a keyframe) and, on a keyframe, the start code and its size."""
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF])
    if not start:
        return descriptor + bytes(body)
    tag = bytes([0x50 if keyframe else 0x51, 0x2C, 0x01])
    if keyframe and size is not None:
        tag += b"\x9d\x01\x2a" + size[0].to_bytes(2, "little") + size[1].to_bytes(2, "little")
    return descriptor + tag + bytes(body)


def vp8(seq: int, *, keyframe: bool = False, start: bool = True, size: Optional[tuple[int, int]] = None,
        ssrc: int = VIDEO_SSRC) -> WirePacket:
    return rtp(VP8.payloadType, seq, 3000 * seq, ssrc, vp8_payload(seq, start=start, keyframe=keyframe, size=size),
               marker=True)


def rtx_of(original: RtpPacket, rtx_seq: int, *, ssrc: int = VIDEO_RTX_SSRC) -> WirePacket:
    """A retransmission as the browser sends it on its RTX stream: OSN, then the original payload."""
    return rtp(RTX.payloadType, rtx_seq, original.timestamp, ssrc,
               original.sequence_number.to_bytes(2, "big") + original.payload, marker=bool(original.marker))


def opus_frame(seq: int) -> bytes:
    return bytes([0x78, seq & 0xFF]) + bytes(40)  # TOC byte (CELT FB 20 ms), then "audio"


def red(seq: int, *, copies: int = 1) -> WirePacket:
    """Chrome's audio RED: the packet's own Opus frame after copies of the `copies` before it
    (none in a stream's first packet)."""
    redundant = [(FRAME * distance, opus_frame(seq - distance)) for distance in range(copies, 0, -1)]
    return rtp(AUDIO_RED.payloadType, seq, FRAME * seq, AUDIO_SSRC,
               build_red(OPUS.payloadType, opus_frame(seq), redundant))


def rtcp_sent(upstream: CapturingTransport) -> list:
    return [packet for data in upstream.sent for packet in RtcpPacket.parse(data)]


def nacked(upstream: CapturingTransport) -> list[int]:
    return sorted(seq for p in rtcp_sent(upstream)
                  if isinstance(p, RtcpRtpfbPacket) and p.fmt == RTCP_RTPFB_NACK for seq in p.lost)


def plis(upstream: CapturingTransport) -> list[int]:
    """The media SSRC each PLI names."""
    return [p.media_ssrc for p in rtcp_sent(upstream) if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]


def rembs(upstream: CapturingTransport) -> list[int]:
    return [unpack_remb_fci(p.fci)[0] for p in rtcp_sent(upstream)
            if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_APP]


async def settle() -> None:
    """Lets the tasks the track started (a PLI's send) run."""
    for _ in range(3):
        await asyncio.sleep(0)


# --- tracks --------------------------------------------------------------------------------------

MakeTrack = Callable[..., tuple[PublishedTrack, CapturingTransport]]


@pytest.fixture
async def make_track() -> AsyncIterator[MakeTrack]:
    """`make_track(kind, codecs)`: a track with the parameters a browser's SDP gives (its media SSRC
    signalled, and for video its RTX SSRC paired with it), and the transport toward its publisher.
    Stopped at the end (its NACK timers)."""
    made: list[PublishedTrack] = []

    def make(kind: str = "video", codecs: Optional[list[RTCRtpCodecParameters]] = None,
             ssrc: Optional[int] = None) -> tuple[PublishedTrack, CapturingTransport]:
        if kind == "video":
            codecs = codecs or [VP8, RTX]
            encoding = RTCRtpDecodingParameters(ssrc=VIDEO_SSRC if ssrc is None else ssrc,
                                                payloadType=codecs[0].payloadType,
                                                rtx=RTCRtpRtxParameters(ssrc=VIDEO_RTX_SSRC))
        else:
            codecs = codecs or [AUDIO_RED, OPUS]
            encoding = RTCRtpDecodingParameters(ssrc=AUDIO_SSRC if ssrc is None else ssrc,
                                                payloadType=codecs[0].payloadType)
        upstream = CapturingTransport()
        track = PublishedTrack(participant_id="patient", kind=kind, transport=upstream, rtcp_ssrc=RTCP_SSRC,
                               parameters=RTCRtpReceiveParameters(codecs=codecs, headerExtensions=EXTENSIONS,
                                                                  rtcp=RTCRtcpParameters(), encodings=[encoding]))
        made.append(track)
        return track, upstream

    yield make
    for track in made:
        await track.stop()


def attach(track: PublishedTrack, *sinks: FakeSink) -> None:
    """What `connect` does, without the keyframe request a new video subscriber makes (the
    tests that count PLIs count only the track's own)."""
    for sink in sinks:
        sink.bind(track)
        track.add_downtrack(sink, keyframe=False)


async def receive(track: PublishedTrack, *packets: RtpPacket, arrival_time_ms: int = 0) -> None:
    for packet in packets:
        await track._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)


class RecordingTap:
    def __init__(self, sinks: tuple[FakeSink, ...] = (), fails: bool = False) -> None:
        self.sinks = sinks
        self.fails = fails
        self.seen: list[tuple[int, int, str]] = []  # (seq, payload type, codec)
        self.sinks_had: list[list[int]] = []  # per packet: how many packets each sink had by then
        self.calls = 0
        self.closed = False

    def on_packet(self, packet: RtpPacket, codec: RTCRtpCodecParameters, arrived_at: float) -> None:
        self.calls += 1
        if self.fails:
            raise RuntimeError("a broken recorder")
        self.seen.append((packet.sequence_number, packet.payload_type, codec.mimeType))
        self.sinks_had.append([len(sink.forwarded) for sink in self.sinks])

    def close(self) -> None:
        self.closed = True


# --- what is dropped -----------------------------------------------------------------------------

async def test_a_payload_type_not_negotiated_is_dropped_and_counted_before_it_can_restart_the_stream(make_track):
    track, upstream = make_track()
    sink, tap = FakeSink(), RecordingTap()
    attach(track, sink)
    track.add_tap(tap)
    await receive(track, vp8(100, keyframe=True))
    await receive(track, rtp(45, 101, 303_000, VIDEO_SSRC, vp8_payload(101)))
    await receive(track, rtp(45, 500, 0, NEW_SSRC, vp8_payload(500)))  # another SSRC, but not media we know
    await receive(track, vp8(102))
    await settle()
    assert [f.sequence_number for f in sink.forwarded] == [100, 102]
    assert [seq for seq, _, _ in tap.seen] == [100, 102]
    assert track.packets_dropped == 2 and track.packets_received == 2
    assert track.summary()["dropped"] == 2
    assert sink.restarts == 0 and track.media_ssrc == VIDEO_SSRC and plis(upstream) == []


async def test_ulpfec_outside_red_is_dropped_and_counted(make_track):
    """FEC on its own payload type, not inside RED: not what browsers send, and not media."""
    track, _ = make_track(codecs=[VP8, RTX, ULPFEC])
    sink = FakeSink()
    attach(track, sink)
    await receive(track, vp8(1, keyframe=True), rtp(ULPFEC.payloadType, 2, 3000, VIDEO_SSRC, bytes(30)), vp8(3))
    assert [f.sequence_number for f in sink.forwarded] == [1, 3]
    assert track.packets_dropped == 1


async def test_a_padding_only_packet_on_the_media_ssrc_goes_to_nobody(make_track):
    """A bandwidth probe (a publisher without RTX pads on its media SSRC): an arrival, not media."""
    track, _ = make_track()
    sink, tap = FakeSink(), RecordingTap()
    attach(track, sink)
    track.add_tap(tap)
    await receive(track, vp8(100, keyframe=True))
    await receive(track, rtp(VP8.payloadType, 101, 300_000, VIDEO_SSRC, b"", padding=224))
    await receive(track, vp8(102))
    assert [f.sequence_number for f in sink.forwarded] == [100, 102]
    assert [seq for seq, _, _ in tap.seen] == [100, 102]
    assert track.packets_received == 3 and track.packets_dropped == 0 and track.duplicates_dropped == 0


async def test_a_padding_only_packet_on_the_media_ssrc_is_neither_nacked_nor_reported_lost(make_track):
    """libwebrtc pads on the media SSRC, in the media's numbering, when RTX is off. That number
    arrived: no NACK for it (they went on to the deadline, then a keyframe was asked for), not
    reported lost, and subscribers number on past it (a hole they would NACK in vain)."""
    track, upstream = make_track()
    sink = FakeSink()
    attach(track, sink)
    await receive(track, vp8(100, keyframe=True))
    await receive(track, rtp(VP8.payloadType, 101, 300_000, VIDEO_SSRC, b"", padding=224))
    await receive(track, vp8(102))
    assert nacked(upstream) == []
    assert track.summary()["lost"] == 0
    assert [f.sequence_number for f in sink.forwarded] == [100, 102] and sink.skipped == [(100, 101)]


# --- retransmissions -----------------------------------------------------------------------------

async def test_a_retransmission_reaches_subscribers_as_the_packet_it_repeats_marked_late(make_track):
    track, upstream = make_track()
    sink, tap = FakeSink(), RecordingTap()
    attach(track, sink)
    track.add_tap(tap)
    lost = vp8(101, start=False)
    await receive(track, vp8(100, keyframe=True), vp8(102))
    assert nacked(upstream) == [101]

    await receive(track, rtx_of(lost, rtx_seq=7000))
    again = sink.forwarded[-1]
    assert (again.sequence_number, again.payload_type, again.ssrc) == (101, VP8.payloadType, VIDEO_SSRC)
    assert (again.timestamp, again.marker, again.payload) == (lost.timestamp, lost.marker, lost.payload)
    assert again.codec is VP8 and again.late
    assert [(f.sequence_number, f.late) for f in sink.forwarded] == [(100, False), (102, False), (101, True)]
    assert tap.seen[-1] == (101, VP8.payloadType, "video/VP8")  # taps see the original too
    # the receiver reports count first transmissions: the publisher is told its uplink lost one
    assert track.summary()["lost"] == 1 and track.nack_stats["recovered"] == 1
    assert sink.restarts == 0 and track.media_ssrc == VIDEO_SSRC  # the RTX SSRC is no new stream


async def test_a_copy_of_a_packet_that_already_arrived_is_dropped(make_track):
    """A second retransmission, or one of Chrome's RTX probes made of packets already sent: the
    subscribers have it. Nothing of it is passed on: not forwarded, not tapped, no second keyframe."""
    track, _ = make_track()
    sink, tap = FakeSink(), RecordingTap()
    attach(track, sink)
    track.add_tap(tap)
    keyframes: list[PublishedTrack] = []
    track.on_keyframe = keyframes.append
    first, lost = vp8(100, keyframe=True), vp8(101, start=False)
    await receive(track, first, vp8(102), rtx_of(lost, 7000))
    await receive(track, rtx_of(lost, 7001), rtx_of(first, 7002))  # a resend, and a probe of the keyframe
    await receive(track, rtp(VP8.payloadType, 101, lost.timestamp, VIDEO_SSRC, lost.payload))  # the original, late
    assert [f.sequence_number for f in sink.forwarded] == [100, 102, 101]
    assert [seq for seq, _, _ in tap.seen] == [100, 102, 101]
    assert track.duplicates_dropped == 3 and len(keyframes) == 1


async def test_a_reordered_original_fills_its_gap_late(make_track):
    track, _ = make_track()
    sink = FakeSink()
    attach(track, sink)
    await receive(track, vp8(100, keyframe=True), vp8(102), vp8(101, start=False))
    assert [(f.sequence_number, f.late) for f in sink.forwarded] == [(100, False), (102, False), (101, True)]
    assert track.duplicates_dropped == 0 and track.summary()["lost"] == 0  # it was a first transmission


async def test_padding_probes_on_the_rtx_stream_go_to_nobody_but_time_the_uplink(make_track):
    """Chrome's probe bursts, padding-only on RTX: nothing to forward, but they measure the uplink
    first (a REMB at the burst's rate), before the track drops them."""
    track, upstream = make_track()
    sink = FakeSink()
    attach(track, sink)
    ms = (1 << 18) / 1000  # abs-send-time units per millisecond
    for i, sent_ms in enumerate([0, 3, 6, 9, 12, 15, 40]):  # one burst, 15 ms long; the last packet ends it
        await receive(track, rtp(RTX.payloadType, 900 + i, 0, VIDEO_RTX_SSRC, b"", padding=250,
                                 send_time=round(sent_ms * ms)), arrival_time_ms=1000 + sent_ms)
    await settle()
    assert sink.forwarded == [] and sink.restarts == 0 and track.media_ssrc == VIDEO_SSRC
    assert track.packets_dropped == 0 and track.duplicates_dropped == 0
    burst_bps = 5 * 250 * 8 * 1000 // 15  # what came after the burst's first packet, over its span
    assert track.uplink_estimate is not None and abs(track.uplink_estimate - burst_bps) < burst_bps * 0.01
    (remb,) = rembs(upstream)  # (REMB's mantissa and exponent round it a little)
    assert abs(remb - track.uplink_estimate) < burst_bps * 0.01


# --- audio RED -----------------------------------------------------------------------------------

async def test_a_red_subscriber_gets_the_red_packet_and_a_plain_one_its_primary(make_track):
    track, _ = make_track("audio")
    with_red, plain = FakeSink(red=True), FakeSink()
    attach(track, with_red, plain)
    sent = red(10)
    await receive(track, red(9, copies=0), sent)

    got = with_red.forwarded[-1]
    assert (got.sequence_number, got.payload_type, got.ssrc, got.timestamp) == (10, AUDIO_RED.payloadType,
                                                                                AUDIO_SSRC, FRAME * 10)
    assert got.payload == sent.payload and got.codec is AUDIO_RED and not got.keyframe_start
    opus = plain.forwarded[-1]
    assert (opus.sequence_number, opus.payload_type, opus.ssrc, opus.timestamp) == (10, OPUS.payloadType,
                                                                                    AUDIO_SSRC, FRAME * 10)
    assert opus.payload == opus_frame(10) and opus.codec is OPUS
    # the copy of 9 inside 10 is not sent again: 9 arrived
    assert [f.sequence_number for f in plain.forwarded] == [9, 10]
    assert [f.sequence_number for f in with_red.forwarded] == [9, 10]
    assert track.red_packets == 2 and track.red_recovered == 0 and track.red_distance == 1


async def test_a_red_copy_recovers_a_lost_packet_for_plain_subscribers_without_a_nack(make_track):
    track, upstream = make_track("audio")
    with_red, plain, tap = FakeSink(red=True), FakeSink(), RecordingTap()
    attach(track, with_red, plain)
    track.add_tap(tap)
    await receive(track, red(20, copies=0), red(22))  # 21 lost on the uplink; 22 carries its copy
    await settle()

    assert [f.sequence_number for f in plain.forwarded] == [20, 21, 22]  # in order: the copy first
    copy = plain.forwarded[1]
    assert (copy.payload_type, copy.ssrc, copy.timestamp, copy.payload) == (OPUS.payloadType, AUDIO_SSRC,
                                                                            FRAME * 21, opus_frame(21))
    assert copy.codec is OPUS
    # the RED subscriber has the copy inside 22 already; on its clean downlink, nothing more
    assert [(f.sequence_number, f.payload_type) for f in with_red.forwarded] == [(20, AUDIO_RED.payloadType),
                                                                                 (22, AUDIO_RED.payloadType)]
    assert [(seq, pt) for seq, pt, _ in tap.seen] == [(20, OPUS.payloadType), (21, OPUS.payloadType),
                                                      (22, OPUS.payloadType)]
    assert track.red_recovered == 1 and track.red_recovered_alone == 0
    assert nacked(upstream) == []  # recovered a round trip before a NACK could have
    assert track.summary()["lost"] == 1  # still a loss on the uplink, as its reports tell the publisher


async def test_a_red_subscriber_on_a_lossy_downlink_also_gets_the_recovered_packet_alone(make_track):
    track, _ = make_track("audio")
    lossy = FakeSink(red=True)
    lossy.downlink_loss.add(30, 100)
    assert lossy.downlink_loss.copies > 1
    attach(track, lossy)
    await receive(track, red(20, copies=0), red(22))
    assert [(f.sequence_number, f.payload_type) for f in lossy.forwarded] == [
        (20, AUDIO_RED.payloadType), (21, OPUS.payloadType), (22, AUDIO_RED.payloadType)]
    assert lossy.forwarded[1].payload == opus_frame(21)
    assert track.red_recovered == 1 and track.red_recovered_alone == 1


async def test_copies_two_deep_come_back_in_order_at_their_own_numbers_and_timestamps(make_track):
    track, _ = make_track("audio")
    plain = FakeSink()
    attach(track, plain)
    await receive(track, red(30, copies=0), red(33, copies=2))  # 31 and 32 lost
    assert [(f.sequence_number, f.timestamp, f.payload) for f in plain.forwarded] == [
        (seq, FRAME * seq, opus_frame(seq)) for seq in (30, 31, 32, 33)]
    assert track.red_recovered == 2 and track.red_distance == 2


async def test_copies_in_the_first_packet_to_arrive_bring_back_the_ones_lost_before_it(make_track):
    """The uplink lost the stream's first packets (before its first arrival nothing was seen,
    so nothing had arrived)."""
    track, _ = make_track("audio")
    plain = FakeSink()
    attach(track, plain)
    await receive(track, red(42, copies=2), red(43))
    assert [f.sequence_number for f in plain.forwarded] == [40, 41, 42, 43]
    assert track.red_recovered == 2


@pytest.mark.parametrize("payload", [
    pytest.param(b"\x80\x01", id="block-header-truncated"),
    pytest.param(bytes([0x80 | OPUS.payloadType, 0x00, 0x3C, 0x10, OPUS.payloadType]) + bytes(4),
                 id="block-longer-than-payload"),
    pytest.param(bytes([AUDIO_RED.payloadType]) + opus_frame(5), id="primary-is-red"),
    pytest.param(bytes([5]) + opus_frame(5), id="primary-not-negotiated"),
    pytest.param(bytes([OPUS.payloadType]), id="primary-empty"),
])
async def test_a_malformed_red_payload_is_dropped_and_counted_and_the_next_copy_brings_it_back(make_track, payload):
    track, _ = make_track("audio")
    with_red, plain = FakeSink(red=True), FakeSink()
    attach(track, with_red, plain)
    await receive(track, red(4, copies=0), rtp(AUDIO_RED.payloadType, 5, FRAME * 5, AUDIO_SSRC, payload))
    assert [f.sequence_number for f in plain.forwarded] == [4]
    assert [f.sequence_number for f in with_red.forwarded] == [4]
    assert track.packets_dropped == 1 and track.red_packets == 2
    # as good as lost: the copy of 5 inside 6 is what plain subscribers get (RED ones have it in 6)
    await receive(track, red(6))
    assert [(f.sequence_number, f.payload) for f in plain.forwarded][1:] == [(5, opus_frame(5)), (6, opus_frame(6))]
    assert [f.sequence_number for f in with_red.forwarded] == [4, 6]
    assert track.red_recovered == 1


async def test_plain_opus_on_a_red_track_goes_to_every_subscriber_as_it_is(make_track):
    """A publisher may send some packets without RED: a RED subscriber takes plain Opus as well."""
    track, _ = make_track("audio")
    with_red, plain = FakeSink(red=True), FakeSink()
    attach(track, with_red, plain)
    await receive(track, rtp(OPUS.payloadType, 1, 0, AUDIO_SSRC, opus_frame(1)))
    for sink in (with_red, plain):
        assert [(f.sequence_number, f.payload_type, f.codec) for f in sink.forwarded] == [(1, OPUS.payloadType, OPUS)]


# --- keyframes -----------------------------------------------------------------------------------

async def test_a_keyframe_start_is_told_before_it_is_forwarded_with_its_size_read(make_track):
    track, _ = make_track()
    sink = FakeSink()
    attach(track, sink)
    told: list[tuple[PublishedTrack, int, Optional[tuple[int, int]]]] = []
    track.on_keyframe = lambda t: told.append((t, len(sink.forwarded), t.frame_size))

    await receive(track, vp8(1, keyframe=True, size=(640, 360)), vp8(2, start=False), vp8(3))
    assert told == [(track, 0, (640, 360))]  # once, at its first packet, before any subscriber had it
    assert sink.received == [(1, True), (2, False), (3, False)]
    assert track.frame_size == (640, 360)

    await receive(track, vp8(4, keyframe=True, size=(1280, 720)))
    assert track.frame_size == (1280, 720) and len(told) == 2
    await receive(track, vp8(5, keyframe=True))  # its first packet too short to read a size from
    assert track.frame_size == (1280, 720) and len(told) == 3 and sink.received[-1] == (5, True)


async def test_a_keyframe_inside_video_red_is_found_after_unwrapping(make_track):
    track, _ = make_track(codecs=[VP8, RTX, RED, ULPFEC, RTX_RED])
    sink = FakeSink()
    attach(track, sink)
    keyframes: list[PublishedTrack] = []
    track.on_keyframe = keyframes.append
    payload = vp8_payload(1, keyframe=True, size=(320, 180))
    await receive(track, rtp(RED.payloadType, 1, 3000, VIDEO_SSRC, red_wrap(VP8.payloadType, payload), marker=True))
    assert [(f.sequence_number, f.payload_type, f.payload, f.keyframe_start) for f in sink.forwarded] == [
        (1, VP8.payloadType, payload, True)]
    assert keyframes == [track] and track.frame_size == (320, 180)


async def test_a_keyframe_arriving_answers_a_keyframe_request_still_waiting(make_track):
    track, upstream = make_track()
    await receive(track, vp8(1, keyframe=True))
    connect(track, FakeSink())  # a new subscriber asks for a keyframe: a PLI at once
    track.request_keyframe()  # another, inside the PLI interval: waits
    await receive(track, vp8(2, keyframe=True))  # a keyframe begins: it answers both
    await asyncio.sleep(0.4)  # past the interval
    assert plis(upstream) == [VIDEO_SSRC]

    track.request_keyframe()  # at once: the interval has passed
    track.request_keyframe()  # waits; no keyframe comes this time, so it goes out
    await receive(track, vp8(3))
    await asyncio.sleep(0.4)
    assert plis(upstream) == [VIDEO_SSRC] * 3


# --- a new stream --------------------------------------------------------------------------------

class OrderedSink(FakeSink):
    """Keeps, per packet forwarded, how many restarts it had been told of by then."""

    def __init__(self) -> None:
        super().__init__()
        self.restarts_before: list[int] = []

    async def forward(self, packet, codec, keyframe_start, abs_send_time, now, late=False) -> None:
        self.restarts_before.append(self.restarts)
        await super().forward(packet, codec, keyframe_start, abs_send_time, now, late)


async def test_a_new_ssrc_restarts_the_stream_before_its_first_packet_goes_on(make_track):
    track, upstream = make_track()
    first, second = OrderedSink(), OrderedSink()
    attach(track, first, second)
    await receive(track, vp8(100, keyframe=True), vp8(101))
    await receive(track, vp8(104, ssrc=NEW_SSRC))  # new numbering: 102 and 103 were never sent
    await settle()

    for sink in (first, second):
        assert sink.restarts == 1 and sink.restarts_before == [0, 0, 1]
        assert [(f.sequence_number, f.ssrc) for f in sink.forwarded] == [
            (100, VIDEO_SSRC), (101, VIDEO_SSRC), (104, NEW_SSRC)]
    assert track.media_ssrc == NEW_SSRC
    assert plis(upstream) == [NEW_SSRC]  # a keyframe asked of the new stream
    assert nacked(upstream) == []  # no gap between two streams' numbers
    assert track.summary()["lost"] == 0  # the reports start over with it

    await receive(track, vp8(106, ssrc=NEW_SSRC))  # the same new stream: a gap now, no restart
    assert first.restarts == 1 and nacked(upstream) == [105]


async def test_the_first_packet_on_another_ssrc_than_signalled_is_no_restart(make_track):
    track, upstream = make_track()
    sink = FakeSink()
    attach(track, sink)
    await receive(track, vp8(1, keyframe=True, ssrc=NEW_SSRC))
    await settle()
    assert sink.restarts == 0 and plis(upstream) == [] and track.media_ssrc == NEW_SSRC
    assert sink.received == [(1, True)]


# --- failure containment -------------------------------------------------------------------------

async def test_a_subscriber_whose_forward_raises_stops_nobody_else(make_track):
    track, _ = make_track()
    before, broken, after = FakeSink(), FakeSink(fails=RuntimeError("a broken subscriber")), FakeSink()
    tap = RecordingTap()
    attach(track, before, broken, after)
    track.add_tap(tap)
    await receive(track, vp8(1, keyframe=True), vp8(2), vp8(3))
    assert before.received == after.received == [(1, True), (2, False), (3, False)]
    assert [seq for seq, _, _ in tap.seen] == [1, 2, 3]
    assert track.downtracks == [before, broken, after]  # reported, not removed: the room decides


async def test_a_subscriber_disconnected_while_it_is_forwarded_to_costs_the_next_one_nothing(make_track):
    track, _ = make_track()

    class LeavingSink(FakeSink):
        async def forward(self, packet, codec, keyframe_start, abs_send_time, now, late=False) -> None:
            await super().forward(packet, codec, keyframe_start, abs_send_time, now, late)
            disconnect(self, track)  # the room takes it off at this await

    leaving, staying = LeavingSink(), FakeSink()
    attach(track, leaving, staying)
    await receive(track, vp8(1, keyframe=True), vp8(2))
    assert leaving.received == [(1, True)]
    assert staying.received == [(1, True), (2, False)]


# --- taps ----------------------------------------------------------------------------------------

async def test_taps_see_each_packet_after_every_subscriber_and_one_that_raises_is_removed(make_track):
    track, _ = make_track()
    sinks = (FakeSink(), FakeSink())
    attach(track, *sinks)
    broken, tap = RecordingTap(fails=True), RecordingTap(sinks)
    track.add_tap(broken)
    track.add_tap(tap)
    await receive(track, vp8(1, keyframe=True), vp8(2), vp8(3))
    assert [(seq, pt) for seq, pt, _ in tap.seen] == [(1, VP8.payloadType), (2, VP8.payloadType),
                                                      (3, VP8.payloadType)]
    assert tap.sinks_had == [[1, 1], [2, 2], [3, 3]]  # every subscriber had the packet already
    assert broken.calls == 1  # removed at its first failure; the other tap went on
    assert all(sink.received == [(1, True), (2, False), (3, False)] for sink in sinks)

    await track.stop()
    assert tap.closed and all(sink.source is None for sink in sinks)
    await receive(track, vp8(4))
    assert len(tap.seen) == 3 and all(len(sink.received) == 3 for sink in sinks)


# --- when the stream arrives, and what it offers ---------------------------------------------------

async def test_arrivals_and_the_rate_offered_count_media_once(make_track, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(published_track_module, "time",
                        SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    track, _ = make_track()
    attach(track, FakeSink())

    async def at(t: float, *packets: RtpPacket) -> None:
        clock[0] = t
        await receive(track, *packets)

    first = vp8(1, keyframe=True)
    await at(100.0, first, vp8(2))
    assert track.arriving_since == 100.0 and track.last_packet_at == 100.0
    offered = track.offered_bps(100.1)
    await at(100.05, rtx_of(first, 7000))  # a duplicate: not media arriving, nothing offered
    await at(100.06, rtp(VP8.payloadType, 3, 9000, VIDEO_SSRC, b"", padding=200))  # padding: neither
    assert track.offered_bps(100.1) == offered and track.last_packet_at == 100.0
    await at(100.4, vp8(4))  # within the gap: the same run of arrivals
    assert track.arriving_since == 100.0 and track.last_packet_at == 100.4
    await at(101.0, vp8(5))  # 0.6 s without a packet: the stream starts again
    assert track.arriving_since == 101.0
