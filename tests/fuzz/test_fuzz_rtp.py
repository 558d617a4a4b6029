"""RTP and RTCP a participant sends, through our handlers: a subscriber's feedback to its
down-track (media/downtrack.py: NACK, PLI/FIR, REMB, receiver and sender reports) and a
publisher's media to its published track (media/published_track.py: RTX unwrap, audio
RED, video RED + ULPFEC, NACK bookkeeping, keyframe detection, forwarding).

aiortc parses the datagrams (RtpPacket.parse / RtcpPacket.parse) and hands the packets to
our `_handle_rtp_packet` / `_handle_rtcp_packet`; its DTLS transport catches ValueError
from its parsers and nothing from our handlers: any exception there ends the
participant's whole connection. So the properties are: aiortc's parsers raise nothing but
ValueError; our handlers raise nothing at all; a NACK, however long and whatever it lists,
makes the server resend each packet it still holds at most once, never more packets than
its cache holds, and every such packet it was asked for; estimates stay in range; the
track's memory stays bounded; what reaches subscribers is well-formed RTP, and from a
genuine (if lossy, reordered, duplicated) stream each media payload goes out exactly once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    unpack_remb_fci,
)
from hypothesis import example, given
from hypothesis import strategies as st

from loadtest.forwarding_rig import EXTENSIONS, FEC_PTS, RED, RTX, RTX_RED, ULPFEC, VP8
from media.aiortc_bridge import WirePacket
from media.downtrack import DownTrack
from media.nack_generator import MAX_TRACKED
from media.published_track import PublishedTrack
from media.receiver_reports import UNSENT_TRACKED
from media.red import build_red
from media.seqnum import seq_add
from media.uplink_fec import PICTURES_REMEMBERED, SEEN_WINDOW
from media.video_fec import VideoFecSender, red_wrap
from tests.support.wire import CapturingTransport

from .support import fuzzed, mutated, note, run, scaled

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=96)
AUDIO_RED = RTCRtpCodecParameters(mimeType="audio/red", clockRate=48000, channels=2, payloadType=63)
EXTENSIONS_MAP = HeaderExtensionsMap()
EXTENSIONS_MAP.configure(RTCRtpReceiveParameters(codecs=[VP8], headerExtensions=EXTENSIONS))

SUBSCRIBER_SSRC, SUBSCRIBER_RTX_SSRC = 1000, 2000
PUBLISHER_SSRC, PUBLISHER_RTX_SSRC = 1234, 5678

# --- aiortc's parsers: what its transport assumes -----------------------------------------------


def rtcp(packet_type: int, count: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return bytes((0x80 | count, packet_type)) + (len(body) // 4).to_bytes(2, "big") + body


def u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


ssrcs = st.sampled_from((SUBSCRIBER_SSRC, PUBLISHER_SSRC, 0)) | st.integers(0, 0xFFFFFFFF)


@st.composite
def report_blocks(draw: st.DrawFn) -> bytes:
    return (u32(draw(ssrcs)) + bytes((draw(st.integers(0, 255)),)) + draw(st.integers(0, 0xFFFFFF)).to_bytes(3, "big")
            + u32(draw(st.integers(0, 0xFFFFFFFF) | st.integers(0, 70_000)))
            + u32(draw(st.integers(0, 0xFFFFFFFF))) + u32(draw(st.integers(0, 0xFFFFFFFF)))
            + u32(draw(st.integers(0, 0xFFFFFFFF) | st.integers(0, 200_000))))


@st.composite
def nack_fcis(draw: st.DrawFn, near: tuple[int, int] = (0, 0xFFFF)) -> bytes:
    """NACK FCIs (PID, BLP): near the numbers sent, anywhere, at the wrap, repeated."""
    pid = st.integers(*near) | st.integers(0, 0xFFFF) | st.sampled_from((0, 0xFFFF, 0xFFF0))
    fcis = draw(st.lists(st.tuples(pid, st.integers(0, 0xFFFF)), max_size=80))
    out = b"".join(p.to_bytes(2, "big") + b.to_bytes(2, "big") for p, b in fcis)
    return out * draw(st.sampled_from((1, 1, 1, 2, 50)))


@st.composite
def rtcp_packets(draw: st.DrawFn, near: tuple[int, int] = (0, 0xFFFF)) -> bytes:
    """One RTCP packet with random fields of a kind a subscriber or publisher sends."""
    kind = draw(st.sampled_from(("nack", "pli", "fir", "remb", "rr", "sr", "other")))
    sender, media = u32(draw(ssrcs)), u32(draw(st.sampled_from((SUBSCRIBER_SSRC,)) | ssrcs))
    if kind == "nack":
        return rtcp(205, RTCP_RTPFB_NACK, sender + media + draw(nack_fcis(near)))
    if kind == "pli":
        return rtcp(206, RTCP_PSFB_PLI, sender + media)
    if kind == "fir":
        return rtcp(206, RTCP_PSFB_FIR, sender + u32(0) + media + u32(draw(st.integers(0, 0xFFFFFFFF))))
    if kind == "remb":
        listed = draw(st.lists(ssrcs, max_size=4))
        claimed = draw(st.sampled_from((len(listed),)) | st.integers(0, 255))
        fci = b"REMB" + bytes((claimed,)) + draw(st.binary(min_size=3, max_size=3)) + b"".join(map(u32, listed))
        return rtcp(206, RTCP_PSFB_APP, sender + u32(0) + draw(st.just(fci) | mutated(st.just(fci))))
    blocks = draw(st.lists(report_blocks(), max_size=3))
    if kind == "rr":
        return rtcp(201, len(blocks), sender + b"".join(blocks))
    if kind == "sr":
        return rtcp(200, len(blocks), sender + draw(st.binary(min_size=20, max_size=20)) + b"".join(blocks))
    return rtcp(draw(st.integers(192, 223)), draw(st.integers(0, 31)), draw(st.binary(max_size=40)))


def compound(parts: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return fuzzed(st.lists(parts, min_size=1, max_size=4).map(b"".join), max_random=200)


@given(compound(rtcp_packets()))
def test_aiortc_rtcp_parse_raises_only_value_error(data):
    try:
        RtcpPacket.parse(data)
    except ValueError:
        pass


@st.composite
def rtp_datagrams(draw: st.DrawFn) -> bytes:
    packet = RtpPacket(payload_type=draw(st.sampled_from((97, 98, 116, 117, 118, 96, 63)) | st.integers(0, 127)),
                       marker=draw(st.integers(0, 1)), sequence_number=draw(st.integers(0, 0xFFFF)),
                       timestamp=draw(st.integers(0, 0xFFFFFFFF)), ssrc=draw(ssrcs),
                       payload=draw(st.binary(max_size=200)))
    packet.extensions.abs_send_time = draw(st.none() | st.integers(0, 0xFFFFFF))
    packet.extensions.mid = draw(st.none() | st.sampled_from(("0", "1")))
    return packet.serialize(EXTENSIONS_MAP)


@given(fuzzed(rtp_datagrams(), max_random=200))
# abs-send-time (id 3) with 2 bytes, not 3: aiortc raised struct.error, which its transport does not catch
@example(b"\x90`\xff\xfa\x00\x00\x00\x00\x00\x00\x04\xd2\xbe\xde\x00\x02\x0002\x00\x00\x00\x00\x00\x00\x00\x00")
def test_aiortc_rtp_parse_raises_only_value_error(data):
    try:
        WirePacket.parse(data, EXTENSIONS_MAP)
    except ValueError:
        pass


# --- a subscriber's RTCP, to its down-track ---------------------------------------------------------


async def started_downtrack(kind: str, codecs: list[RTCRtpCodecParameters]) -> tuple[DownTrack, CapturingTransport]:
    downtrack = DownTrack(subscriber_id="s", kind=kind, ssrc=SUBSCRIBER_SSRC, rtx_ssrc=SUBSCRIBER_RTX_SSRC)
    transport = CapturingTransport()
    await downtrack.start(transport, RTCRtpSendParameters(
        codecs=codecs, headerExtensions=EXTENSIONS, muxId="3", rtcp=RTCRtcpParameters(cname="x")))
    return downtrack, transport


DOWNTRACK_SETUPS = {
    "video": ("video", [VP8]),
    "video+rtx": ("video", [VP8, RTX]),
    "video+fec": ("video", [VP8, RTX, RED, ULPFEC, RTX_RED]),
    "audio": ("audio", [OPUS]),
}


def resent_numbers(datagrams: list[bytes], rtx: bool) -> list[int]:
    """The original sequence numbers of retransmissions (RTX: its OSN)."""
    out = []
    for data in datagrams:
        packet = RtpPacket.parse(data)
        if packet.ssrc == SUBSCRIBER_RTX_SSRC:
            out.append(int.from_bytes(packet.payload[:2], "big"))
        else:
            assert not rtx or packet.payload_type not in (VP8.payloadType, RED.payloadType)
            out.append(packet.sequence_number)
    return out


@dataclass
class DowntrackRun:
    setup: str
    first_seq: int
    sent: int
    datagrams: list[bytes] = field(default_factory=list)


@st.composite
def downtrack_runs(draw: st.DrawFn) -> DowntrackRun:
    first = draw(st.sampled_from((0, 65_500, 65_535)) | st.integers(0, 0xFFFF))  # the subscriber's numbers
    sent = draw(st.integers(0, 300) | st.sampled_from((1100, 1300)))  # past the audio and the video cache
    near = (max(0, first - 20), min(0xFFFF, first + sent + 20))
    return DowntrackRun(draw(st.sampled_from(sorted(DOWNTRACK_SETUPS))), first, sent,
                        draw(st.lists(compound(rtcp_packets(near)), min_size=1, max_size=6)))


async def drive_downtrack(case: DowntrackRun) -> None:
    kind, codecs = DOWNTRACK_SETUPS[case.setup]
    downtrack, transport = await started_downtrack(kind, codecs)
    assert downtrack._rewriter is not None
    downtrack._rewriter._last_seq = (case.first_seq - 1) & 0xFFFF  # it numbers on from a random point: from here
    source = VP8 if kind == "video" else OPUS
    for i in range(case.sent):
        packet = RtpPacket(payload_type=source.payloadType, marker=int(i % 3 == 2),
                           sequence_number=(case.first_seq + i) & 0xFFFF, timestamp=3000 * (i // 3),
                           ssrc=PUBLISHER_SSRC, payload=bytes((0x10 if i % 3 == 0 else 0x00, 0x00)) + b"data")
        await downtrack.forward(packet, source, keyframe_start=i == 0, abs_send_time=i, now=time.monotonic())
    cache_size = downtrack._cache._size
    rtx = "rtx" in case.setup or "fec" in case.setup
    try:
        for data in case.datagrams:
            try:
                packets = RtcpPacket.parse(data)
            except ValueError:
                continue  # aiortc's transport drops it
            for packet in packets:
                before_sent, before_resent = len(transport.sent), downtrack.retransmitted
                before_plis, before_remb = downtrack.plis_received, downtrack.remb_bitrate
                await downtrack._handle_rtcp_packet(packet)
                if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                    held = {s & 0xFFFF for s in packet.lost if downtrack._cache.get(s & 0xFFFF) is not None}
                    resent = resent_numbers(transport.sent[before_sent:], rtx)
                    assert downtrack.retransmitted - before_resent == len(resent) <= cache_size
                    assert sorted(resent) == sorted(held)  # each held packet asked for, once
                    note(f"{case.setup}: NACK answered with {'some' if resent else 'no'} retransmissions")
                elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                    assert downtrack.plis_received == before_plis + 1
                elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                    try:
                        bitrate, listed = unpack_remb_fci(packet.fci)
                    except Exception:  # malformed: ignored
                        assert downtrack.remb_bitrate == before_remb
                    else:
                        assert downtrack.remb_bitrate == (bitrate if SUBSCRIBER_SSRC in listed else before_remb)
                assert 0.0 <= downtrack.reported_loss <= 1.0
                assert downtrack.rtt is None or downtrack.rtt >= 0
                assert len(downtrack.reports._unsent) <= 2 * UNSENT_TRACKED
                json.dumps(downtrack.summary())
    finally:
        await downtrack.stop()


@scaled(2)
@given(downtrack_runs())
@example(DowntrackRun("video+rtx", 65_530, 10, [rtcp(205, RTCP_RTPFB_NACK, u32(1) + u32(SUBSCRIBER_SSRC)
                                                       + b"\xff\xff\x00\x01")]))  # 65535 and 0, across the wrap
@example(DowntrackRun("video", 100, 5, [rtcp(205, RTCP_RTPFB_NACK, u32(1) + u32(SUBSCRIBER_SSRC)
                                                 + b"\x00\x64\x00\x0f" * 300)]))  # 4 packets asked 300 times each
@example(DowntrackRun("video+rtx", 0, 1300, [rtcp(205, RTCP_RTPFB_NACK, u32(1) + u32(SUBSCRIBER_SSRC) + b"".join(
    pid.to_bytes(2, "big") + b"\xff\xff" for pid in range(0, 0x10000, 17)))]))  # every number: the cache's 1024 resent
@example(DowntrackRun("video", 100, 5, [rtcp(206, RTCP_PSFB_APP, u32(1) + u32(0) + b"REMB\x02\x00\x00\x01"
                                                 + u32(SUBSCRIBER_SSRC))]))  # says 2 SSRCs, carries 1
def test_a_downtrack_answers_any_rtcp_and_resends_each_held_packet_at_most_once(case):
    run(lambda: drive_downtrack(case))


# --- a publisher's RTP, to its published track ------------------------------------------------------


def vp8_payload(picture_id: int, first: bool, keyframe: bool, body: bytes) -> bytes:
    descriptor = bytes((0x80 | (0x10 if first else 0), 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF))
    return descriptor + (bytes((0x00 if keyframe else 0x01,)) if first else b"") + body


def serialize(payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False,
              send_time: int = 0) -> bytes:
    packet = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=seq, timestamp=timestamp,
                       ssrc=ssrc, payload=payload)
    packet.extensions.abs_send_time = send_time
    packet.extensions.mid = "0"
    return packet.serialize(EXTENSIONS_MAP)


@dataclass
class Uplink:
    kind: str
    datagrams: list[bytes]
    media_payloads: set[bytes]  # what subscribers may receive, as the publisher sent it
    clean: bool  # lost, late, twice and retransmitted, but never altered


@st.composite
def video_uplinks(draw: st.DrawFn) -> tuple[list[tuple[str, int, bytes]], set[bytes]]:
    """What Chrome sends with red/ulpfec negotiated: VP8 in RED, ULPFEC in RED after frames."""
    fec = VideoFecSender(FEC_PTS)
    fec.update_loss(draw(st.sampled_from((0.0, 0.05, 0.3))))
    seq, picture = draw(st.sampled_from((65_500, 0)) | st.integers(0, 0xFFFF)), draw(st.integers(0, 0x7FFF))
    sent: list[tuple[str, int, bytes]] = []
    payloads: set[bytes] = set()
    for frame in range(draw(st.integers(1, 10))):
        count = draw(st.integers(1, 5))
        for i in range(count):
            payload = vp8_payload((picture + frame) & 0x7FFF, i == 0, frame == 0,
                                  draw(st.binary(min_size=1, max_size=60)) + frame.to_bytes(2, "big") + bytes((i,)))
            payloads.add(payload)
            marker = i == count - 1
            protected = serialize(VP8.payloadType, seq, 3000 * frame, PUBLISHER_SSRC, payload, marker)
            sent.append(("media", seq, serialize(RED.payloadType, seq, 3000 * frame, PUBLISHER_SSRC,
                                                 red_wrap(VP8.payloadType, payload), marker, frame * 100)))
            seq = seq_add(seq, 1)
            for fec_payload in fec.protect(protected):
                sent.append(("fec", seq, serialize(RED.payloadType, seq, 3000 * frame, PUBLISHER_SSRC, fec_payload)))
                seq = seq_add(seq, 1)
    return sent, payloads


@st.composite
def audio_uplinks(draw: st.DrawFn) -> tuple[list[tuple[str, int, bytes]], set[bytes]]:
    """Opus in RED with the previous frame as redundancy (Chrome's distance 1), or plain Opus."""
    seq = draw(st.sampled_from((65_530, 0)) | st.integers(0, 0xFFFF))
    red = draw(st.booleans())
    frames = [draw(st.binary(min_size=1, max_size=40)) + i.to_bytes(2, "big") for i in range(draw(st.integers(1, 30)))]
    sent = []
    for i, frame in enumerate(frames):
        if red:
            payload = build_red(OPUS.payloadType, frame, [(960, frames[i - 1])] if i else [])
            sent.append(("media", seq, serialize(AUDIO_RED.payloadType, seq, 960 * i, PUBLISHER_SSRC, payload)))
        else:
            sent.append(("media", seq, serialize(OPUS.payloadType, seq, 960 * i, PUBLISHER_SSRC, frame)))
        seq = seq_add(seq, 1)
    return sent, set(frames)


def rtx_of(datagram: bytes, rtx_pt: int, rtx_seq: int) -> bytes:
    original = RtpPacket.parse(datagram, EXTENSIONS_MAP)
    return serialize(rtx_pt, rtx_seq, original.timestamp, PUBLISHER_RTX_SSRC,
                     original.sequence_number.to_bytes(2, "big") + original.payload, bool(original.marker))


@st.composite
def uplinks(draw: st.DrawFn) -> Uplink:
    kind = draw(st.sampled_from(("video", "audio")))
    sent, payloads = draw(video_uplinks() if kind == "video" else audio_uplinks())
    clean = draw(st.booleans())
    rtx_pt = RTX_RED.payloadType if kind == "video" else None
    arrived: list[bytes] = []
    rtx_seq = draw(st.integers(0, 0xFFFF))
    for what, _, datagram in sent:
        fate = draw(st.sampled_from(("arrive", "arrive", "arrive", "lost", "twice", "late", "rtx", "mutate")))
        if fate == "lost":
            continue
        if fate == "mutate" and not clean:
            arrived.append(draw(mutated(st.just(datagram))))
            continue
        arrived.append(datagram)
        if fate == "twice":
            arrived.append(datagram)
        elif fate == "late" and len(arrived) > 1:
            at = draw(st.integers(max(0, len(arrived) - 8), len(arrived) - 1))
            arrived.insert(at, arrived.pop())
        elif fate == "rtx" and rtx_pt is not None and what == "media":
            arrived.insert(draw(st.integers(max(0, len(arrived) - 1), len(arrived))), rtx_of(datagram, rtx_pt, rtx_seq))
            rtx_seq = seq_add(rtx_seq, 1)
    if not clean:
        for _ in range(draw(st.integers(0, 5))):
            arrived.insert(draw(st.integers(0, len(arrived))), draw(fuzzed(rtp_datagrams(), max_random=100)))
    return Uplink(kind, arrived, payloads, clean)


async def drive_published_track(uplink: Uplink) -> tuple[CapturingTransport, CapturingTransport]:
    """Feeds the datagrams to a published track with one subscriber; (upstream RTCP, to the subscriber)."""
    if uplink.kind == "video":
        codecs, sub_codecs = [VP8, RTX, RED, ULPFEC, RTX_RED], [VP8, RTX]
        rtx = RTCRtpRtxParameters(ssrc=PUBLISHER_RTX_SSRC)
    else:
        codecs, sub_codecs, rtx = [AUDIO_RED, OPUS], [OPUS], None
    subscriber, to_subscriber = await started_downtrack(uplink.kind, sub_codecs)
    upstream = CapturingTransport()
    track = PublishedTrack(
        participant_id="p", kind=uplink.kind, transport=upstream, rtcp_ssrc=1,
        parameters=RTCRtpReceiveParameters(
            codecs=codecs, headerExtensions=EXTENSIONS, rtcp=RTCRtcpParameters(),
            encodings=[RTCRtpDecodingParameters(ssrc=PUBLISHER_SSRC, payloadType=codecs[0].payloadType, rtx=rtx)]))
    subscriber.attach(track)
    try:
        for n, data in enumerate(uplink.datagrams):
            try:
                packet = WirePacket.parse(data, EXTENSIONS_MAP)
            except ValueError:
                continue  # aiortc's transport drops it
            await track._handle_rtp_packet(packet, arrival_time_ms=10 * n)
            assert len(track.nacks.generator._missing) <= MAX_TRACKED
            fec = track._uplink_fec
            if fec is not None:
                assert len(fec._seen) <= SEEN_WINDOW and len(fec._pictures) <= PICTURES_REMEMBERED
                if fec._decoder is not None:
                    decoder = fec._decoder
                    assert decoder.stored_packets <= decoder.window
                    assert decoder.pending_fec <= decoder.max_pending_fec
        json.dumps(track.summary())
        note(f"{uplink.kind} stream, {'genuine' if uplink.clean else 'altered'}")
        if track._uplink_fec is not None and track._uplink_fec.recovered:
            note("video: uplink FEC rebuilt lost media")
        if track.red_recovered:
            note("audio: a RED copy recovered lost media")
        if upstream.sent:
            note("NACKs sent upstream")
        forwarded = [RtpPacket.parse(d) for d in to_subscriber.sent]
        for packet in forwarded:
            assert packet.ssrc == SUBSCRIBER_SSRC and packet.payload_type == sub_codecs[0].payloadType
        for data in upstream.sent:
            RtcpPacket.parse(data)  # what we send back is well-formed RTCP
        if uplink.clean:
            payloads = [p.payload for p in forwarded]
            assert set(payloads) <= uplink.media_payloads
            assert len(payloads) == len(set(payloads)), "a media payload went out twice"
        return upstream, to_subscriber
    finally:
        await track.stop()
        await subscriber.stop()


@scaled(2)
@given(uplinks())
# an RTX packet before any media: the track's summary (the admin API's) raised TypeError
@example(Uplink("video", [serialize(RTX.payloadType, 0, 0, 1000, b"\x00\x00")], set(), clean=False))
def test_a_published_track_takes_any_rtp_and_forwards_each_payload_once(uplink):
    run(lambda: drive_published_track(uplink))


@given(compound(rtcp_packets()))
def test_a_published_track_takes_any_rtcp(data):
    async def main() -> None:
        track = PublishedTrack(
            participant_id="p", kind="video", transport=CapturingTransport(), rtcp_ssrc=1,
            parameters=RTCRtpReceiveParameters(
                codecs=[VP8], encodings=[RTCRtpDecodingParameters(ssrc=1, payloadType=VP8.payloadType)]))
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            return
        for packet in packets:
            await track._handle_rtcp_packet(packet)
    run(main)


def test_a_loss_across_the_wrap_is_nacked():
    """Regression: the NACK for 65535 and 0 could not be serialized (aiortc needs ascending numbers),
    and the exception ended the publisher's connection."""
    seqs = (65_532, 65_533, 65_534, 1, 2)
    datagrams = [serialize(OPUS.payloadType, seq, 960 * i, PUBLISHER_SSRC, bytes((i, 1))) for i, seq in enumerate(seqs)]
    upstream, to_subscriber = run(lambda: drive_published_track(
        Uplink("audio", datagrams, {bytes((i, 1)) for i in range(len(seqs))}, clean=True)))
    nacked = {seq for data in upstream.sent for packet in RtcpPacket.parse(data)
              if isinstance(packet, RtcpRtpfbPacket) for seq in packet.lost}
    assert nacked == {65_535, 0} and len(to_subscriber.sent) == len(seqs)
