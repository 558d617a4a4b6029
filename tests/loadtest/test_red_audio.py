"""RED for the load-test client's audio: the answer it gives, what its publisher sends, what its receiver records."""

from __future__ import annotations

import asyncio
import fractions
import re
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import RtpPacket

from loadtest import publisher
from loadtest.clips import frame_key
from loadtest.preencoded import EncodedClip
from loadtest.publisher import StampedClipTrack
from loadtest.receiver import InstrumentedBuffer, StreamRecord
from loadtest.red_audio import RedCodec, add_red_to_answer, offered_red, receive_red, send_red
from media.red import build_red, parse_red
from media.sdp_tweaks import answered_red_by_mid, enable_audio_resilience, offer_audio_red

RED_PT = 63


def insert_red(offer: str, first: bool = True, red_pt: int = RED_PT) -> str:
    """red/48000/2 for the section's Opus payload type in every audio m-section, as the server's offers have it."""
    out: list[str] = []
    for section in re.split(r"\r\n(?=m=)", offer.strip("\r\n")):
        lines = section.split("\r\n")
        opus = next((m.group(1) for line in lines if (m := re.match(r"a=rtpmap:(\d+) opus/", line))), None)
        if lines[0].startswith("m=audio") and opus:
            fields = lines[0].split(" ")
            formats = [str(red_pt)] + fields[3:] if first else fields[3:] + [str(red_pt)]
            lines[0] = " ".join(fields[:3] + formats)
            i = next(i for i, line in enumerate(lines) if line.startswith("a=rtpmap:"))
            lines[i:i] = [f"a=rtpmap:{red_pt} red/48000/2", f"a=fmtp:{red_pt} {opus}/{opus}"]
        out.append("\r\n".join(lines))
    return "\r\n".join(out) + "\r\n"


async def server_offer() -> str:
    """A real aiortc offer shaped like our server's: the publisher's audio and video, one subscribed audio."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="sendonly")
    offer = await pc.createOffer()
    await pc.close()
    return offer.sdp


def audio_clip(count: int = 50) -> EncodedClip:
    packets = [bytes([0x78]) + i.to_bytes(2, "big") * 20 for i in range(count)]  # distinct "Opus" packets
    return EncodedClip(kind="audio", codec="opus", time_base=fractions.Fraction(1, 48000), duration=count * 960,
                       packets=packets, pts=[i * 960 for i in range(count)], keyframes=[True] * count)


def m_line(text: str, mid: str) -> list[int]:
    for section in re.split(r"\r\n(?=m=)", text):
        if f"\r\na=mid:{mid}\r\n" in section + "\r\n":
            return [int(f) for f in section.split("\r\n")[0].split(" ")[3:]]
    raise AssertionError(f"no m-section with mid {mid}")


# --- the answer --------------------------------------------------------------------------------------


async def test_red_first_in_the_offer_is_answered_first_on_every_audio_section():
    offer = insert_red(await server_offer())
    client = RTCPeerConnection()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    edited, accepted = add_red_to_answer(answer.sdp, offer)

    opus = offered_red(offer)["0"][1]
    assert set(accepted) == {"0", "2"}  # both audio sections, not the video one
    assert accepted["0"] == RedCodec(mid="0", red_pt=RED_PT, opus_pt=opus, red_first=True)
    for mid in ("0", "2"):
        assert m_line(edited, mid)[0] == RED_PT and m_line(edited, mid)[1:] == m_line(answer.sdp, mid)
    assert f"a=rtpmap:{RED_PT} red/48000/2\r\na=fmtp:{RED_PT} {opus}/{opus}\r\n" in edited
    assert m_line(edited, "1") == m_line(answer.sdp, "1")
    assert edited.count("red/48000") == 2

    # aiortc takes the edited answer as its local description, and what it would send keeps red
    await client.setLocalDescription(RTCSessionDescription(edited, "answer"))
    parsed = sdp.SessionDescription.parse(client.localDescription.sdp)
    audio = [m for m in parsed.media if m.kind == "audio"]
    assert all(m.fmt[0] == RED_PT and m.rtp.codecs[0].mimeType.lower() == "audio/red" for m in audio)
    await client.close()


async def test_red_after_opus_in_the_offer_is_answered_after_it_and_not_sent():
    offer = insert_red(await server_offer(), first=False)
    client = RTCPeerConnection()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    await client.close()
    edited, accepted = add_red_to_answer(answer.sdp, offer)
    assert not accepted["0"].red_first
    formats = m_line(edited, "0")
    assert formats.index(RED_PT) > formats.index(accepted["0"].opus_pt)


async def test_an_offer_without_red_leaves_the_answer_alone():
    offer = await server_offer()
    client = RTCPeerConnection()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    await client.close()
    edited, accepted = add_red_to_answer(answer.sdp, offer)
    assert accepted == {} and edited.replace("\r\n", "\n").strip() == answer.sdp.replace("\r\n", "\n").strip()


def test_red_of_something_else_than_opus_is_not_taken():
    offer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111 0\r\na=mid:0\r\na=rtpmap:63 red/48000/2\r\n"
             "a=fmtp:63 0/0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n")
    assert offered_red(offer) == {}


async def test_the_servers_own_offer_and_answer_parsing_agree():
    """With the server's own SDP edits: a renamed or missing edit fails here, it is not skipped."""
    offer = offer_audio_red(enable_audio_resilience(await server_offer()))
    client = RTCPeerConnection()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    await client.close()
    edited, accepted = add_red_to_answer(answer.sdp, offer)
    assert accepted and all(r.red_first for r in accepted.values())
    assert answered_red_by_mid(edited) == {mid: (r.red_pt, r.opus_pt) for mid, r in accepted.items()}


# --- the publisher ---------------------------------------------------------------------------------


async def test_the_track_sends_each_packet_with_the_previous_one(monkeypatch):
    monkeypatch.setattr(publisher.asyncio, "sleep", _no_sleep)
    clip = audio_clip()
    track = StampedClipTrack(clip, start_index=7)
    first = bytes(await track.recv())
    assert first == clip.packets[7]  # before red is negotiated: plain Opus
    track.use_red(111)
    payloads = [bytes(await track.recv()) for _ in range(3)]
    blocks = parse_red(payloads[0])
    assert [(b.payload_type, b.timestamp_offset, b.data) for b in blocks] == \
        [(111, 960, clip.packets[7]), (111, 0, clip.packets[8])]
    for k, payload in enumerate(payloads[1:], start=9):
        assert [b.data for b in parse_red(payload)] == [clip.packets[k - 1], clip.packets[k]]
    assert [i for i, _ in track.sends] == [7, 8, 9, 10]  # the send log stays per clip index
    assert track.counters()["red"]


async def test_the_sender_wrapper_swaps_in_the_red_payload_type():
    sent: list[RTCRtpSendParameters] = []
    track = StampedClipTrack(audio_clip())

    class Sender:
        def __init__(self) -> None:
            self.track = track

        async def send(self, parameters: RTCRtpSendParameters) -> None:
            sent.append(parameters)

    sender = Sender()
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111,
                                 parameters={"useinbandfec": 1})
    send_red(sender, RedCodec(mid="0", red_pt=RED_PT, opus_pt=111, red_first=True))
    await sender.send(RTCRtpSendParameters(codecs=[opus], muxId="0"))
    (parameters,) = sent
    assert parameters.codecs[0].payloadType == RED_PT and parameters.codecs[0].mimeType == "audio/opus"
    assert opus.payloadType == 111  # the negotiated codec itself is not changed
    assert track._red_opus_pt == 111


@pytest.mark.timeout(30)
async def test_aiortc_sends_red_packets_on_the_wire():
    """A real aiortc sender, answer edited as the client does: RED payloads with the red payload type."""
    clip = audio_clip(200)
    server = RTCPeerConnection()
    incoming = server.addTransceiver("audio", direction="recvonly")
    await server.setLocalDescription(await server.createOffer())
    offer = insert_red(server.localDescription.sdp)

    client = RTCPeerConnection()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    (transceiver,) = client.getTransceivers()
    track = StampedClipTrack(clip)
    transceiver.sender.replaceTrack(track)
    transceiver.direction = "sendonly"
    answer = await client.createAnswer()
    edited, accepted = add_red_to_answer(answer.sdp, offer)
    red = accepted[transceiver.mid]
    send_red(transceiver.sender, red)
    await client.setLocalDescription(RTCSessionDescription(edited, "answer"))

    received: list[RtpPacket] = []
    got = asyncio.Event()

    async def capture(packet: RtpPacket, arrival_time_ms: int) -> None:
        received.append(packet)
        if len(received) >= 5:
            got.set()

    receive_red(incoming.receiver, red)  # without it aiortc's router drops the red payload type
    incoming.receiver._handle_rtp_packet = capture
    await server.setRemoteDescription(client.localDescription)
    try:
        await asyncio.wait_for(got.wait(), 20)
    finally:
        await client.close()
        await server.close()
    assert all(p.payload_type == RED_PT for p in received)
    sent = {frame_key(p): i for i, p in enumerate(clip.packets)}
    for packet in received[1:]:
        previous, current = parse_red(packet.payload)
        assert previous.payload_type == current.payload_type == red.opus_pt
        assert previous.timestamp_offset == 960
        assert sent[frame_key(current.data)] == sent[frame_key(previous.data)] + 1


async def _no_sleep(_: float) -> None:
    return None


# --- the receiver ----------------------------------------------------------------------------------


class StockRecorder:
    """Stands in for aiortc's audio jitter buffer: what it was given."""

    capacity = 16

    def __init__(self) -> None:
        self.packets: list[RtpPacket] = []

    def add(self, packet: RtpPacket) -> tuple[bool, Any]:
        self.packets.append(packet)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def audio_buffer(clip: EncodedClip) -> tuple[InstrumentedBuffer, StreamRecord, StockRecorder]:
    buffer = InstrumentedBuffer(capacity=16, is_video=False)
    stock = buffer.stock = StockRecorder()
    record = StreamRecord(subscriber="s", mid="2", kind="audio", codec="vp8", probe=False, by_marker=False,
                          keys={frame_key(p): i for i, p in enumerate(clip.packets)})
    buffer.attach(record)
    buffer.use_red(RedCodec(mid="2", red_pt=RED_PT, opus_pt=111, red_first=True))
    return buffer, record, stock


def rtp(payload_type: int, seq: int, data: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=payload_type, sequence_number=seq, timestamp=seq * 960, payload=data)
    packet._data = data  # what aiortc's receiver sets after depayloading (Opus: the payload itself)
    return packet


def test_a_red_packet_is_an_arrival_of_both_blocks_and_the_buffer_gets_the_primary():
    clip = audio_clip()
    buffer, record, stock = audio_buffer(clip)
    _, frame = buffer.add(rtp(RED_PT, 5, build_red(111, clip.packets[5], [(960, clip.packets[4])])))
    assert [a[0] for a in record.arrivals] == [4, 5] and record.arrivals[0][2] == 1 and len(record.arrivals[1]) == 2
    (plain,) = stock.packets
    assert plain.payload_type == 111 and plain._data == plain.payload == clip.packets[5] and plain.sequence_number == 5
    assert frame.data == clip.packets[5]
    assert record.red and record.red_packets == 1 and record.to_json()["red_packets"] == 1


def test_plain_opus_still_counts_and_a_malformed_red_payload_is_lost():
    clip = audio_clip()
    buffer, record, stock = audio_buffer(clip)
    buffer.add(rtp(111, 6, clip.packets[6]))  # e.g. a packet the server recovered, sent as plain Opus
    assert [a[0] for a in record.arrivals] == [6] and stock.packets[0].payload_type == 111
    pli, frame = buffer.add(rtp(RED_PT, 7, b"\x80\x01"))  # a block header cut short
    assert (pli, frame) == (False, None) and record.red_malformed == 1
    assert len(record.arrivals) == 1 and len(stock.packets) == 1


async def test_the_receiver_wrapper_registers_red_as_opus_and_tells_the_buffer():
    clip = audio_clip()
    buffer = InstrumentedBuffer(capacity=16, is_video=False)
    got: list[RTCRtpReceiveParameters] = []

    class Receiver:
        async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
            got.append(parameters)

    receiver = Receiver()
    setattr(receiver, "_RTCRtpReceiver__jitter_buffer", buffer)  # where loadtest.receiver.buffer_of looks
    red = RedCodec(mid="2", red_pt=RED_PT, opus_pt=111, red_first=True)
    receive_red(receiver, red)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[opus], muxId="2"))
    assert [(c.payloadType, c.mimeType) for c in got[0].codecs] == [(111, "audio/opus"), (RED_PT, "audio/opus")]
    assert buffer.red == red
    record = StreamRecord(subscriber="s", mid="2", kind="audio", codec="vp8", probe=False, by_marker=False,
                          keys={frame_key(p): i for i, p in enumerate(clip.packets)})
    buffer.attach(record)  # attached after red was negotiated: still flagged
    assert record.red
