"""Video RED + ULPFEC on the load-test client's receivers: the answer it gives, and decoding as Chrome does."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack, RTCRtpReceiver
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unwrap_rtx

from loadtest.clips import frame_key
from loadtest.receiver import FrameBundle, InstrumentedBuffer, RetryingNackGenerator, StreamRecord, buffer_of, equip
from loadtest.red_video import RedVideoCodec, add_video_fec_to_answer, answer_with_video_fec, receive_video_fec
from loadtest.sources import PatternVideoTrack
from media.aiortc_bridge import WirePacket
from media.sdp_tweaks import join_sections, section_mid, split_sections
from media.sdp_video_fec import VideoFecPayloadTypes, _fec_section, video_fec_by_mid
from media.ulpfec import UlpfecEncoder

VP8_PT, VP8_RTX_PT, RED_PT, RTX_PT, ULPFEC_PT = 96, 97, 116, 117, 118
SSRC, RTX_SSRC = 0x1234, 0x5678
FEC = VideoFecPayloadTypes(red=RED_PT, ulpfec=ULPFEC_PT, rtx=RTX_PT)
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=VP8_PT)
ABS_SEND_TIME_ID = 3
HEADER_EXTENSIONS = [RTCRtpHeaderExtensionParameters(1, "urn:ietf:params:rtp-hdrext:sdes:mid"),
                     RTCRtpHeaderExtensionParameters(ABS_SEND_TIME_ID,
                                                     "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")]


def extensions_map() -> HeaderExtensionsMap:
    mapping = HeaderExtensionsMap()
    mapping.configure(RTCRtpReceiveParameters(headerExtensions=HEADER_EXTENSIONS))
    return mapping


EXTENSIONS = extensions_map()


# --- the answer -------------------------------------------------------------------------------------------


async def server_offer(fec_mids: tuple[str, ...] = ("1", "3")) -> str:
    """A real aiortc offer shaped like our server's (publisher's audio and video in, one subscribed
    audio and video out), with video FEC offered in the server's format (media.sdp_video_fec) on
    `fec_mids`: "1" is the video the participant publishes on, "3" the server's sending video
    (an older server offered it on "3" only)."""
    pc = RTCPeerConnection()
    for kind, direction in (("audio", "recvonly"), ("video", "recvonly"), ("audio", "sendonly"),
                            ("video", "sendonly")):
        pc.addTransceiver(kind, direction=direction)
    offer = await pc.createOffer()
    await pc.close()
    session, sections = split_sections(offer.sdp)
    return join_sections(session, [_fec_section(s) if section_mid(s) in fec_mids else s for s in sections])


def m_line(text: str, mid: str) -> list[int]:
    for section in re.split(r"\r\n(?=m=)", text):
        if f"\r\na=mid:{mid}\r\n" in section + "\r\n":
            return [int(f) for f in section.split("\r\n")[0].split(" ")[3:]]
    raise AssertionError(f"no m-section with mid {mid}")


def quiet_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN server to ask


@pytest.mark.parametrize("fec_mids", [("3",), ("1", "3")])
async def test_the_answer_keeps_red_ulpfec_and_rtx_for_red_where_they_were_offered(fec_mids):
    offer = await server_offer(fec_mids)
    offered = video_fec_by_mid(offer)
    assert set(offered) == set(fec_mids)
    client = quiet_peer()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    edited, accepted = add_video_fec_to_answer(answer.sdp, offer)

    assert accepted == offered and video_fec_by_mid(edited) == offered  # what the server reads back
    for mid, fec in offered.items():
        assert m_line(edited, mid) == m_line(answer.sdp, mid) + [fec.red, fec.rtx, fec.ulpfec]  # the offer's order
        assert f"a=rtpmap:{fec.rtx} rtx/90000\r\na=fmtp:{fec.rtx} apt={fec.red}\r\n" in edited
    for mid in {"0", "1", "2"} - set(fec_mids):
        assert m_line(edited, mid) == m_line(answer.sdp, mid)
    assert edited.count("red/90000") == edited.count("ulpfec/90000") == len(fec_mids)

    # aiortc takes the edited answer as its local description and keeps the codecs in it
    await client.setLocalDescription(RTCSessionDescription(edited, "answer"))
    parsed = sdp.SessionDescription.parse(client.localDescription.sdp)
    names = {c.mimeType.lower() for c in parsed.media[3].rtp.codecs}
    assert {"video/red", "video/ulpfec", "video/rtx"} <= names
    await client.close()


async def test_an_offer_without_video_fec_leaves_the_answer_alone():
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    offer = (await pc.createOffer()).sdp
    await pc.close()
    client = quiet_peer()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    await client.close()
    edited, accepted = add_video_fec_to_answer(answer.sdp, offer)
    assert accepted == {} and edited.replace("\r\n", "\n").strip() == answer.sdp.replace("\r\n", "\n").strip()


def test_a_section_keeping_no_vp8_or_a_rejected_one_is_left_alone():
    offer = ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102 116 117 118\r\na=mid:0\r\na=sendonly\r\n"
             "a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\na=rtpmap:116 red/90000\r\n"
             "a=rtpmap:117 rtx/90000\r\na=fmtp:117 apt=116\r\na=rtpmap:118 ulpfec/90000\r\n")
    h264_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=recvonly\r\na=rtpmap:102 H264/90000\r\n"
    rejected = "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n"
    for answer in (h264_only, rejected):
        assert add_video_fec_to_answer(answer, offer) == (answer, {})


async def test_the_answer_wrapper_wires_the_receivers_of_the_accepting_sections_only():
    offer = await server_offer()
    client = quiet_peer()
    accepted: dict[str, VideoFecPayloadTypes] = {}
    client.createAnswer = answer_with_video_fec(client, lambda: offer, accepted)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    await client.close()
    assert accepted == video_fec_by_mid(offer) == video_fec_by_mid(answer.sdp)
    wired = {t.mid for t in client.getTransceivers() if getattr(t.receiver, "_loadtest_video_fec", None)}
    assert wired == set(accepted) == {"1", "3"}
    # senders too: each acts only if aiortc starts it (loadtest.video_fec_sender)
    assert {t.mid for t in client.getTransceivers() if getattr(t.sender, "_loadtest_video_fec", None)} == wired


async def publishing_answer(offer: str, send: bool) -> tuple[RTCPeerConnection, dict, str]:
    """The client's answer while it publishes video on mid "1", as loadtest.participant sets it up."""
    client = quiet_peer()
    accepted: dict[str, VideoFecPayloadTypes] = {}
    client.createAnswer = answer_with_video_fec(client, lambda: offer, accepted, send=send)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    publishing = next(t for t in client.getTransceivers() if t.mid == "1")
    publishing.sender.replaceTrack(PatternVideoTrack())
    publishing.direction = "sendonly"
    answer = await client.createAnswer()
    await client.close()
    return client, accepted, answer.sdp


@pytest.mark.parametrize("send", [True, False])
async def test_the_publishing_section_takes_video_fec_unless_downlink_only(send):
    offer = await server_offer(("1", "3"))
    client, accepted, answer = await publishing_answer(offer, send)
    publishing = next(t.sender for t in client.getTransceivers() if t.mid == "1")
    offered = video_fec_by_mid(offer)
    expected = {"1", "3"} if send else {"3"}
    assert set(accepted) == expected and video_fec_by_mid(answer) == {m: offered[m] for m in expected}
    assert "a=sendonly" in next(s for s in split_sections(answer)[1] if section_mid(s) == "1")  # it publishes there
    assert (getattr(publishing, "_loadtest_video_fec", None) is not None) == send


async def test_the_receiver_wrapper_registers_red_and_rtx_for_red_and_tells_the_buffer():
    buffer = InstrumentedBuffer(capacity=512, is_video=True)
    got: list[RTCRtpReceiveParameters] = []

    class Receiver:
        async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
            got.append(parameters)

    receiver = Receiver()
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", buffer)  # where loadtest.receiver.buffer_of looks
    receive_video_fec(receiver, FEC)
    vp8_rtx = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=VP8_RTX_PT,
                                    parameters={"apt": VP8_PT})
    await receiver.receive(RTCRtpReceiveParameters(codecs=[VP8, vp8_rtx], headerExtensions=HEADER_EXTENSIONS))
    codecs = {c.payloadType: c for c in got[0].codecs}
    red = codecs[RED_PT]
    assert isinstance(red, RedVideoCodec) and red.name == "VP8"  # aiortc's decoder thread keeps its VP8 decoder
    assert codecs[RTX_PT].name == "rtx" and codecs[RTX_PT].parameters == {"apt": RED_PT}
    assert ULPFEC_PT not in codecs  # FEC only ever arrives inside RED
    assert buffer.video_fec == FEC and set(buffer._media_codecs) == {VP8_PT}
    assert buffer._zero_from == {ABS_SEND_TIME_ID: 0}
    record = video_record([])
    buffer.attach(record)  # attached after negotiation: still flagged
    assert record.red and record.to_json()["fec_recovered"] == 0


# --- what the server sends ----------------------------------------------------------------------------------


@dataclass
class Sent:
    kind: str  # "media" or "fec"
    seq: int
    frame: int
    timestamp: int
    marker: bool
    red: bytes  # the RED payload
    wire: bytes  # the packet as sent
    protected: bytes = b""  # media: the packet as FEC protects it


@dataclass
class Stream:
    sent: list[Sent]
    frames: list[bytes]  # each frame as the receiver reassembles it

    def media(self, frame: int) -> list[Sent]:
        return [s for s in self.sent if s.frame == frame and s.kind == "media"]

    def fec(self, frame: int) -> list[Sent]:
        return [s for s in self.sent if s.frame == frame and s.kind == "fec"]


def rtp(payload_type: int, seq: int, timestamp: int, marker: bool, payload: bytes, abs_send_time: int) -> bytes:
    packet = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=seq, timestamp=timestamp,
                       ssrc=SSRC, payload=payload)
    packet.extensions.mid = "3"
    packet.extensions.abs_send_time = abs_send_time
    return packet.serialize(EXTENSIONS)


def vp8_descriptor(picture_id: int, start: bool) -> bytes:
    # X, S with partition 0 on a frame's first packet; I with a 15-bit picture ID
    return bytes([0x90 if start else 0x80, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF])


def server_stream(spec: list[tuple[int, bool]], group: int = 4, first_seq: int = 65500) -> Stream:
    """Frames given as (packet count, keyframe), sent as our server sends to a subscriber with FEC on:
    every packet RED, FEC of the packets as protected (no RED, abs-send-time zeroed) right after
    each frame's last packet; the wire packets carry a real abs-send-time."""
    encoder = UlpfecEncoder(group)
    sent: list[Sent] = []
    frames: list[bytes] = []
    seq = first_seq
    for n, (count, key) in enumerate(spec):
        body = (b"\x00\x00\x00\x9d\x01\x2a" if key else b"\x01\x00\x00") + bytes((n + i) % 256 for i in range(30 + n))
        chunk = -(-len(body) // count)
        timestamp = 3000 * n
        due: list[bytes] = []
        for k in range(count):
            payload = vp8_descriptor(n, k == 0) + body[k * chunk:(k + 1) * chunk]
            marker = k == count - 1
            protected = rtp(VP8_PT, seq & 0xFFFF, timestamp, marker, payload, 0)
            due += encoder.add(protected)
            red = bytes([VP8_PT]) + payload
            sent.append(Sent("media", seq & 0xFFFF, n, timestamp, marker, red,
                             rtp(RED_PT, seq & 0xFFFF, timestamp, marker, red, 1000 + seq % 5000), protected))
            seq += 1
        for fec in due:
            red = bytes([ULPFEC_PT]) + fec
            sent.append(Sent("fec", seq & 0xFFFF, n, timestamp, False, red,
                             rtp(RED_PT, seq & 0xFFFF, timestamp, False, red, 1000 + seq % 5000)))
            seq += 1
        frames.append(body)
    return Stream(sent, frames)


def rtx_wire(sent: Sent, rtx_seq: int) -> bytes:
    """The server's retransmission: rtx-for-red on the RTX SSRC, original sequence number + RED payload."""
    packet = RtpPacket(payload_type=RTX_PT, marker=int(sent.marker), sequence_number=rtx_seq,
                       timestamp=sent.timestamp, ssrc=RTX_SSRC, payload=sent.seq.to_bytes(2, "big") + sent.red)
    return packet.serialize(EXTENSIONS)


# --- the buffer, fed as aiortc's receiver feeds it ----------------------------------------------------------


def video_record(frames: list[bytes]) -> StreamRecord:
    return StreamRecord(subscriber="s", mid="3", kind="video", codec="vp8", probe=False, by_marker=False,
                        keys={frame_key(f): i for i, f in enumerate(frames)})


class Subscriber:
    """A browser-mode buffer with video FEC negotiated, fed in the order aiortc's RTCRtpReceiver
    handles a packet: RTX unwrapped, NACK generator, depayload (RED left whole), buffer."""

    def __init__(self, stream: Stream) -> None:
        self.buffer = InstrumentedBuffer(capacity=512, is_video=True)
        self.buffer.mode = "browser"
        self.record = video_record(stream.frames)
        self.buffer.attach(self.record)
        self.buffer.use_video_fec(FEC, {VP8_PT: VP8}, {ABS_SEND_TIME_ID: 0})
        self.nack = self.buffer.nack = RetryingNackGenerator()
        self.nacked: list[int] = []
        self.frames: list[bytes] = []

    def receive(self, data: bytes) -> None:
        packet = WirePacket.parse(data, EXTENSIONS)
        if packet.payload_type == RTX_PT:
            packet = unwrap_rtx(packet, payload_type=RED_PT, ssrc=SSRC)
        if self.nack.add(packet):
            self.nacked += self.nack.missing
        packet._data = packet.payload  # loadtest.receiver's depayload leaves RED payloads whole
        _, out = self.buffer.add(packet)
        if out is not None:
            self.frames += [f.data for f in (out.frames if isinstance(out, FrameBundle) else [out])]

    def receive_all(self, sent: list[Sent], lost: list[Sent] = ()) -> None:
        for s in sent:
            if s not in lost:
                self.receive(s.wire)

    def asked_for(self, seq: int) -> bool:
        """Still on the NACK list (would be asked for again)."""
        return seq in self.nack._tries


def test_a_lost_media_packet_is_rebuilt_from_fec_and_not_asked_for_again():
    stream = server_stream([(3, True)] + [(3, False)] * 5)
    lost = stream.media(1)[1]
    sub = Subscriber(stream)
    sub.receive_all(stream.sent, [lost])
    assert sub.frames == stream.frames  # every frame, bit-exact
    assert sub.buffer._fec_decoder._packets[lost.seq] == lost.protected  # the packet itself, too
    assert sub.record.fec_recovered == 1 and sub.record.fec_packets == len([s for s in stream.sent if s.kind == "fec"])
    assert sub.nacked == [lost.seq]  # NACKed when the gap showed, before FEC arrived, as Chrome does
    assert not sub.asked_for(lost.seq)  # recovered: off the NACK list
    assert [e[0] for e in sub.record.complete] == list(range(6))
    data = sub.record.to_json()
    assert data["red"] and data["fec_recovered"] == 1 and data["red_malformed"] == data["fec_malformed"] == 0


def test_a_recovered_packet_leaves_the_nack_list_while_its_frame_still_waits():
    stream = server_stream([(2, True)] + [(3, False)] * 3)
    waiting, recovered = stream.media(1)[:2], stream.media(2)[1]  # frame 1: two lost of one FEC group
    sub = Subscriber(stream)
    sub.receive_all(stream.sent, [*waiting, recovered])
    assert sub.frames == stream.frames[:1] and sub.record.fec_recovered == 1
    assert all(sub.asked_for(s.seq) for s in waiting) and not sub.asked_for(recovered.seq)
    for i, s in enumerate(waiting):
        sub.receive(rtx_wire(s, i))
    assert sub.frames == stream.frames


def test_a_lost_fec_packet_leaves_a_hole_that_breaks_nothing():
    stream = server_stream([(2, True)] + [(2, False)] * 6)
    lost = stream.fec(2) + stream.fec(4)
    sub = Subscriber(stream)
    sub.receive_all(stream.sent, lost)
    assert sub.frames == stream.frames  # VP8 continuity is by picture ID
    received_fec = {s.seq for s in stream.sent if s.kind == "fec" and s not in lost}
    assert not received_fec & set(sub.nacked)  # FEC that arrived is never NACKed
    assert set(sub.nacked) == {s.seq for s in lost}  # what Chrome asks for too (the server ignores it)
    assert not any(sub.asked_for(s.seq) for s in lost)  # given up once later frames were released


def test_a_lost_media_frame_still_breaks_the_chain_until_the_keyframe():
    stream = server_stream([(2, True)] + [(2, False)] * 4 + [(2, True)] + [(2, False)] * 2)
    sub = Subscriber(stream)
    sub.receive_all(stream.sent, stream.media(2))  # both packets of a group of two: FEC cannot help
    assert sub.frames == [stream.frames[i] for i in (0, 1, 5, 6, 7)]
    assert sub.record.fec_recovered == 0


def test_retransmissions_are_delivered_but_kept_out_of_fec():
    """Two packets of one FEC group lost: libwebrtc does not feed retransmissions to its FEC
    decoder, so the first one back does not let FEC rebuild the other."""
    stream = server_stream([(2, True)] + [(3, False)] * 3)
    first, second = stream.media(2)[:2]
    sub = Subscriber(stream)
    sub.receive_all(stream.sent, [first, second])
    assert sub.frames == stream.frames[:2]
    sub.receive(rtx_wire(first, 1))
    assert sub.frames == stream.frames[:2] and sub.record.fec_recovered == 0
    sub.receive(rtx_wire(second, 2))
    assert sub.frames == stream.frames
    assert sub.record.fec_recovered == 0 and sub.record.red_malformed == 0


def test_a_retransmission_of_a_recovered_packet_changes_nothing():
    stream = server_stream([(2, True)] + [(3, False)] * 2)
    lost = stream.media(1)[0]
    sub = Subscriber(stream)
    sub.receive_all(stream.sent, [lost])
    sub.receive(rtx_wire(lost, 1))  # the answer to the NACK sent before FEC recovered it
    assert sub.frames == stream.frames and sub.record.fec_recovered == 1


def test_malformed_red_and_fec_are_counted_and_dropped():
    stream = server_stream([(2, True)] + [(3, False)] * 4)
    bad_media = stream.media(1)[1]
    unknown_pt = stream.media(3)[1]
    bad_fec = stream.fec(3)[0]  # the FEC that could have rebuilt `unknown_pt`
    swapped = {
        # two RED blocks: libwebrtc takes one only
        bad_media.seq: rtp(RED_PT, bad_media.seq, bad_media.timestamp, bad_media.marker,
                           bytes([0x80 | VP8_PT, 0, 0, 1, VP8_PT]) + bad_media.red, 5),
        unknown_pt.seq: rtp(RED_PT, unknown_pt.seq, unknown_pt.timestamp, unknown_pt.marker,
                            bytes([99]) + unknown_pt.red[1:], 5),
        bad_fec.seq: rtp(RED_PT, bad_fec.seq, bad_fec.timestamp, False, bytes([ULPFEC_PT, 0x00, 0x01]), 5),
    }
    sub = Subscriber(stream)
    for s in stream.sent:
        sub.receive(swapped.get(s.seq, s.wire))
    assert sub.record.red_malformed == 2 and sub.record.fec_malformed == 1
    assert sub.record.fec_packets == len([s for s in stream.sent if s.kind == "fec"])
    # FEC rebuilt the packet of frame 1; frame 3's FEC was malformed: it waits, asking for its packet
    assert sub.record.fec_recovered == 1 and sub.frames == stream.frames[:3]
    assert sub.asked_for(unknown_pt.seq) and not sub.asked_for(bad_fec.seq)
    sub.receive(rtx_wire(unknown_pt, 1))
    assert sub.frames == stream.frames


def test_an_empty_red_packet_is_padding():
    stream = server_stream([(2, True), (2, False)])
    sub = Subscriber(stream)
    sub.receive_all(stream.sent)
    seq = (stream.sent[-1].seq + 1) & 0xFFFF
    sub.receive(rtp(RED_PT, seq, 6000, False, b"", 5))
    assert sub.record.red_malformed == 0 and not sub.nacked and sub.frames == stream.frames


# --- through aiortc's own receiver ----------------------------------------------------------------------------


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@pytest.mark.timeout(30)
async def test_red_fec_and_rtx_for_red_through_aiortcs_receiver(browser_receiver_module):
    """A real RTCRtpReceiver (no network): routing by payload type, RTX unwrapping to red, NACKs, decoding."""
    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    receiver = RTCRtpReceiver("video", transport)
    receiver._track = RemoteStreamTrack(kind="video")
    stream = server_stream([(3, True)] + [(3, False)] * 6)
    buffer = buffer_of(receiver)
    record = video_record(stream.frames)
    buffer.attach(record)
    nacks: list[int] = []

    async def send_nack(media_ssrc: int, lost: list[int]) -> None:
        assert media_ssrc == SSRC
        nacks.extend(lost)

    receiver._send_rtcp_nack = send_nack
    receive_video_fec(receiver, FEC)
    vp8_rtx = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=VP8_RTX_PT,
                                    parameters={"apt": VP8_PT})
    await receiver.receive(RTCRtpReceiveParameters(
        codecs=[VP8, vp8_rtx], headerExtensions=HEADER_EXTENSIONS, muxId="3",
        encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=VP8_PT, rtx=RTCRtpRtxParameters(ssrc=RTX_SSRC))]))
    equip(receiver, buffer, audio_deadline_s=0.3)
    recovered, retransmitted, hole = stream.media(1)[2], stream.media(3)[:2], stream.fec(4)
    try:
        for s in stream.sent:
            if s is not recovered and s not in retransmitted and s not in hole:
                await receiver._handle_rtp_packet(WirePacket.parse(s.wire, EXTENSIONS), arrival_time_ms=0)
        for i, s in enumerate(retransmitted):
            await receiver._handle_rtp_packet(WirePacket.parse(rtx_wire(s, i), EXTENSIONS), arrival_time_ms=0)
        await wait_for(lambda: len(record.rendered) >= len(stream.frames))
    finally:
        await receiver.stop()
    assert [e[0] for e in record.rendered] == list(range(len(stream.frames))) and all(e[2] for e in record.rendered)
    assert record.fec_recovered == 1 and record.red_malformed == record.fec_malformed == 0
    received_fec = {s.seq for s in stream.sent if s.kind == "fec" and s not in hole}
    assert not received_fec & set(nacks)
    assert {recovered.seq, *(s.seq for s in retransmitted)} <= set(nacks)
