"""Transport-cc on the load-test client: the answer it gives, the feedback it sends, and the server reading it."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from pyee.asyncio import AsyncIOEventEmitter

from loadtest.transport_feedback import (
    MAX_RECEIVED_PER_FEEDBACK,
    TransportFeedbackGenerator,
    add_transport_cc_to_answer,
    answer_with_transport_cc,
    feedback_generators,
    offered_transport_cc,
    transport_sequence_number,
)
from media.rtp_writer import TRANSPORT_CC_URI
from media.sdp_transport_cc import answered_transport_cc, offer_transport_cc
from media.sdp_tweaks import section_mid, split_sections
from media.twcc_feedback import TransportFeedback, parse_fci

REPO_ROOT = Path(__file__).resolve().parents[2]
EXT_ID = 7
SENDER_SSRC = 0x11223344


async def server_offer() -> str:
    """A real aiortc offer shaped like our server's (the publisher's audio and video, then two subscribed
    sections), with transport-cc added by the server's own edit (on the send-only sections only)."""
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    offer = await pc.createOffer()
    await pc.close()
    return offer_transport_cc(offer.sdp)


def sections_by_mid(sdp: str) -> dict[str, list[str]]:
    return {str(section_mid(s)): s for s in split_sections(sdp)[1]}


# --- the answer --------------------------------------------------------------------------------------


async def test_the_answer_keeps_transport_cc_on_the_sections_that_offered_it():
    offer = await server_offer()
    assert set(offered_transport_cc(offer)) == {"2", "3"}  # the server's send-only sections
    client = RTCPeerConnection()
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    assert answered_transport_cc(answer.sdp) == {}  # aiortc drops it
    edited, accepted = add_transport_cc_to_answer(answer.sdp, offer)

    ext_id = offered_transport_cc(offer)["2"][0]
    assert accepted == {"2": ext_id, "3": ext_id}
    assert answered_transport_cc(edited) == accepted  # what the server reads from the answer
    before, after = sections_by_mid(answer.sdp), sections_by_mid(edited)
    assert after["0"] == before["0"] and after["1"] == before["1"]  # the publishing sections: untouched
    for mid in ("2", "3"):
        section = after[mid]
        assert section.count(f"a=extmap:{ext_id} {TRANSPORT_CC_URI}") == 1
        media_pts = [int(f) for f in section[0].split()[3:]
                     if not any(line.startswith(f"a=rtpmap:{f} rtx/") for line in section)]
        for pt in media_pts:
            assert f"a=rtcp-fb:{pt} transport-cc" in section
            assert section.index(f"a=rtcp-fb:{pt} transport-cc") == section.index(
                next(line for line in section if line.startswith(f"a=rtpmap:{pt} "))) + 1
        assert not any(line.endswith(" transport-cc") and line.split()[0].split(":")[1] not in map(str, media_pts)
                       for line in section)  # none for rtx

    # aiortc takes it as its local description and keeps both in what the client sends
    await client.setLocalDescription(RTCSessionDescription(edited, "answer"))
    assert answered_transport_cc(client.localDescription.sdp) == accepted
    await client.close()


def test_only_payload_types_with_feedback_in_the_offer_get_it_and_rejected_sections_stay():
    offer = ("v=0\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\na=mid:0\r\na=sendonly\r\n"
             f"a=extmap:4/sendonly {TRANSPORT_CC_URI}\r\n"
             "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 transport-cc\r\na=rtpmap:97 H264/90000\r\n"
             "a=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=96\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n"
             f"a=extmap:4 {TRANSPORT_CC_URI}\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:* transport-cc\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=rtpmap:111 opus/48000/2\r\n")  # no transport-cc
    answer = ("v=0\r\n"
              "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\na=mid:0\r\na=recvonly\r\n"
              "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
              "a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtpmap:97 H264/90000\r\n"
              "a=rtpmap:98 rtx/90000\r\na=fmtp:98 apt=96\r\n"
              "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=rtpmap:111 opus/48000/2\r\n"
              "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=rtpmap:111 opus/48000/2\r\n")
    edited, accepted = add_transport_cc_to_answer(answer, offer)
    assert accepted == {"0": 4}
    video = sections_by_mid(edited)["0"]
    # after the other extmaps, without the offer's direction
    assert video[video.index("a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid") + 1] == f"a=extmap:4 {TRANSPORT_CC_URI}"
    assert video[video.index("a=rtpmap:96 VP8/90000") + 1] == "a=rtcp-fb:96 transport-cc"
    assert not any("rtcp-fb:97" in line or "rtcp-fb:98" in line for line in video)
    assert sections_by_mid(edited)["1"] == sections_by_mid(answer)["1"]  # rejected
    assert sections_by_mid(edited)["2"] == sections_by_mid(answer)["2"]  # not offered
    assert answered_transport_cc(edited) == {"0": 4}


async def test_the_wrapped_create_answer_records_the_id_and_installs_one_generator_per_transport():
    offer = await server_offer()
    client = RTCPeerConnection()
    accepted: dict[str, int] = {}
    client.createAnswer = answer_with_transport_cc(client, lambda: offer, accepted)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    await client.setLocalDescription(answer)
    ext_id = offered_transport_cc(offer)["2"][0]
    assert accepted == answered_transport_cc(answer.sdp) == {"2": ext_id, "3": ext_id}
    generators = feedback_generators(client)
    assert generators and all(g.ext_id == ext_id and g.sender_ssrc == client.getTransceivers()[0].sender._ssrc
                              for g in generators)
    assert {t.receiver.transport for t in client.getTransceivers() if t.mid in accepted} == \
           {g.transport for g in generators}
    await client.close()
    assert all(g.closed and g._task is None for g in generators)  # no packet arrived: no task was started


async def test_an_offer_without_transport_cc_leaves_the_answer_alone():
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    offer = (await pc.createOffer()).sdp
    await pc.close()
    client = RTCPeerConnection()
    accepted: dict[str, int] = {}
    client.createAnswer = answer_with_transport_cc(client, lambda: offer, accepted)
    await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    answer = await client.createAnswer()
    assert accepted == {} and answered_transport_cc(answer.sdp) == {} and feedback_generators(client) == []
    await client.close()


# --- reading the sequence number ------------------------------------------------------------------------


def rtp(seq16: Optional[int], *, ssrc: int = 0xAABBCCDD, ext_id: int = EXT_ID, two_byte: bool = False,
        csrcs: int = 0, rtp_seq: int = 1) -> bytes:
    """An RTP packet with a MID element, padding, then the transport-wide sequence number (not first)."""
    header = bytes([0x90 | csrcs, 96]) + struct.pack("!HLL", rtp_seq, 1234, ssrc) + bytes(4 * csrcs)
    tcc = b"" if seq16 is None else seq16.to_bytes(2, "big")
    if two_byte:
        elements = bytes([1, 1]) + b"3" + b"\x00" + (bytes([ext_id, 2]) + tcc if tcc else b"")
        profile = 0x1000
    else:
        elements = bytes([0x10]) + b"3" + b"\x00\x00" + (bytes([ext_id << 4 | 1]) + tcc if tcc else b"")
        profile = 0xBEDE
    elements += bytes(-len(elements) % 4)
    return header + struct.pack("!HH", profile, len(elements) // 4) + elements + b"payload"


def test_the_sequence_number_is_found_in_one_and_two_byte_extensions():
    assert transport_sequence_number(rtp(0x1234), EXT_ID) == 0x1234
    assert transport_sequence_number(rtp(0xFFFF, csrcs=2), EXT_ID) == 0xFFFF
    assert transport_sequence_number(rtp(0x0102, two_byte=True), EXT_ID) == 0x0102
    assert transport_sequence_number(rtp(0x1234), EXT_ID + 1) is None  # another id
    assert transport_sequence_number(rtp(None), EXT_ID) is None  # not in the packet
    plain = bytes([0x80, 96]) + struct.pack("!HLL", 1, 2, 3) + b"payload"
    assert transport_sequence_number(plain, EXT_ID) is None  # no extension block
    truncated = rtp(0x1234)[:20]
    assert transport_sequence_number(truncated, EXT_ID) is None


# --- the feedback ----------------------------------------------------------------------------------------


class FakeTransport(AsyncIOEventEmitter):
    """What the generator uses of aiortc's RTCDtlsTransport."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.state = "connected"
        self.sent: list[bytes] = []
        self.handled: list[tuple[bytes, int]] = []
        self.fail = fail

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        self.handled.append((data, arrival_time_ms))

    async def _send_rtp(self, data: bytes) -> None:
        if self.fail:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        self.sent.append(data)


def read(packet: bytes) -> tuple[int, int, TransportFeedback]:
    """(sender SSRC, media SSRC, feedback) of one transport-cc RTCP packet."""
    first, packet_type, length = struct.unpack_from("!BBH", packet)
    assert (first, packet_type) == (0x80 | 15, 205) and len(packet) == 4 + 4 * length
    sender, media = struct.unpack_from("!LL", packet, 4)
    return sender, media, parse_fci(packet[12:])


def generator(**kwargs) -> TransportFeedbackGenerator:
    return TransportFeedbackGenerator(FakeTransport(), SENDER_SSRC, ext_id=EXT_ID, **kwargs)


def test_a_feedback_covers_every_packet_since_the_last_with_gaps_lost_across_the_wrap():
    g = generator()
    arrivals = {65533: 1_000_000, 65534: 1_001_000, 65535: 1_003_250, 1: 1_010_000, 2: 1_009_500, 4: 1_020_000}
    for seq16, at in arrivals.items():  # 0 and 3 are lost; 2 arrives before 1
        g.on_packet(rtp(seq16, ssrc=0x01010101 if seq16 != 4 else 0x02020202, two_byte=seq16 == 2), at)
    (packet,) = g.take_feedback()
    sender, media, feedback = read(packet)
    assert sender == SENDER_SSRC and media == 0x02020202  # the last packet's SSRC
    assert feedback.base_sequence == 65533 and feedback.feedback_count == 0
    expected = [1_000_000, 1_001_000, 1_003_250, None, 1_010_000, 1_009_500, None, 1_020_000]
    assert list(feedback.arrivals) == expected
    assert g.counters() == {"ext_id": EXT_ID, "packets": 6, "feedbacks": 1, "reported": 8, "lost_reported": 2,
                            "late": 0, "ignored": 0, "send_errors": 0}

    assert g.take_feedback() == []  # nothing new
    for seq16, at in ((7, 1_100_000), (5, 1_101_000)):  # 6 lost, and 5 comes after 7
        g.on_packet(rtp(seq16), at)
    (packet,) = g.take_feedback()
    _, media, feedback = read(packet)
    assert media == 0xAABBCCDD and feedback.feedback_count == 1
    assert feedback.base_sequence == 5 and list(feedback.arrivals) == [1_101_000, None, 1_100_000]


def test_a_packet_reported_lost_that_arrives_later_is_reported_again_with_what_follows():
    g = generator()
    for seq16, at in ((10, 0), (12, 1000), (13, 2000)):
        g.on_packet(rtp(seq16), at)
    (packet,) = g.take_feedback()
    assert list(read(packet)[2].arrivals) == [0, None, 1000, 2000]
    g.on_packet(rtp(11), 50_000)  # late: moves the window back, as libwebrtc's generator does
    g.on_packet(rtp(14), 51_000)
    g.on_packet(rtp(11), 52_000)  # a duplicate: nothing
    (packet,) = g.take_feedback()
    feedback = read(packet)[2]
    assert feedback.base_sequence == 11 and list(feedback.arrivals) == [50_000, 1000, 2000, 51_000]
    assert feedback.feedback_count == 1
    assert g.late == 1 and g.ignored == 1 and g.reported == 8 and g.lost_reported == 1


def test_feedback_is_split_where_a_delta_overflows_and_after_a_thousand_packets():
    g = generator()
    g.on_packet(rtp(100), 0)
    g.on_packet(rtp(101), 250)
    g.on_packet(rtp(103), 9_000_000)  # 9 s later: more than a signed 16-bit count of 250 us
    first, second = (read(p)[2] for p in g.take_feedback())
    assert (first.base_sequence, list(first.arrivals)) == (100, [0, 250])
    assert (second.base_sequence, list(second.arrivals)) == (102, [None, 9_000_000])
    assert (first.feedback_count, second.feedback_count) == (0, 1)

    g = generator()
    count = MAX_RECEIVED_PER_FEEDBACK * 2 + 10
    for i in range(count):
        g.on_packet(rtp(i & 0xFFFF), 1000 * i)
    feedbacks = [read(p)[2] for p in g.take_feedback()]
    assert [len(f.arrivals) for f in feedbacks] == [MAX_RECEIVED_PER_FEEDBACK] * 2 + [10]
    assert [f.base_sequence for f in feedbacks] == [0, MAX_RECEIVED_PER_FEEDBACK, 2 * MAX_RECEIVED_PER_FEEDBACK]
    assert [a for f in feedbacks for a in f.arrivals] == [1000 * i for i in range(count)]


def test_the_feedback_count_wraps_at_256():
    g = generator()
    counts = []
    for i in range(300):
        g.on_packet(rtp(i), 1000 * i)
        counts += [read(p)[2].feedback_count for p in g.take_feedback()]
    assert counts == [i & 0xFF for i in range(300)]


async def test_the_installed_generator_sends_every_interval_and_stops_with_the_transport():
    transport = FakeTransport()
    loop = asyncio.get_running_loop()
    g = TransportFeedbackGenerator(transport, SENDER_SSRC, ext_id=EXT_ID, interval_s=0.02, loop=loop)
    g.install()
    for i in range(5):
        await transport._handle_rtp_data(rtp(i), arrival_time_ms=123)
        await asyncio.sleep(0.005)
    assert len(transport.handled) == 5  # aiortc's handler still gets every packet
    for _ in range(100):
        if sum(len(read(p)[2].arrivals) for p in transport.sent) == 5:
            break
        await asyncio.sleep(0.01)
    feedbacks = [read(p)[2] for p in transport.sent]
    assert [a is not None for f in feedbacks for a in f.arrivals] == [True] * 5
    arrivals = [a for f in feedbacks for a in f.arrivals if a is not None]
    assert arrivals == sorted(arrivals) and 15_000 <= arrivals[-1] - arrivals[0] <= 2_000_000  # loop time, in us
    task = g._task
    assert task is not None and not task.done()
    transport.state = "closed"
    transport.emit("statechange")
    await asyncio.sleep(0)
    await asyncio.gather(task, return_exceptions=True)
    assert g.closed and task.done()
    await transport._handle_rtp_data(rtp(9), arrival_time_ms=123)
    assert g.packets == 5  # no longer recording
    await g.close()  # idempotent


async def test_a_transport_that_cannot_send_is_counted_not_raised():
    transport = FakeTransport(fail=True)
    g = TransportFeedbackGenerator(transport, SENDER_SSRC, ext_id=EXT_ID, interval_s=0.01,
                                   loop=asyncio.get_running_loop())
    g.on_packet(rtp(1), 0)
    await g.send_feedback()
    assert g.send_errors == 1 and g.feedbacks == 1
    await g.close()
    assert g._task is not None and g._task.done()


# --- the command line -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, receiver, expected", [("auto", "browser", True), ("off", "browser", False),
                                                      ("auto", "aiortc", False)])
def test_the_cli_option(mode, receiver, expected, tmp_path):
    from loadtest.__main__ import client_config, parameters, parse_args

    args = parse_args(["--transport-cc", mode, "--receiver", receiver, "--profile", "clean"])
    config = client_config(args, "ours", args.profiles[0], [["token"]], "http://127.0.0.1:9", tmp_path / "r.json")
    assert config["transport_cc"] is expected
    assert parameters(args, [])["transport_cc"] == mode
    assert parse_args(["--profile", "clean"]).transport_cc == "auto"


# --- against our server ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_server_receives_transport_cc_feedback_from_the_load_test(tmp_path):
    """A short clean run: every subscriber answers transport-cc, the server stamps what it sends them
    and reads their feedback (its admin API's counters at the window's end)."""
    out = tmp_path / "loadtest.json"
    command = [
        sys.executable, "-m", "loadtest", "--server", "ours", "--profile", "clean", "--rooms", "1",
        "--duration", "5", "--warmup", "1", "--drain", "1", "--settle-timeout", "30",
        "--resolution", "480p", "--codec", "vp8", "--clip-seconds", "5", "--receiver", "browser",
        "--simulcast", "off", "--transport-cc", "auto",
        "--cache-dir", str(tmp_path / "clips"), "--json", str(out), "--no-progress",
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=140)
    assert out.exists(), f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    (run,) = json.loads(out.read_text())["runs"]
    assert "error" not in run, run
    assert run["parameters"]["transport_cc"] == "auto"

    (room,) = run["server_media"]["rooms"].values()
    assert len(room) == 3
    for pid, peer in room.items():
        server = peer["downlink"]["transport_cc"]
        client = run["transport_cc"][pid]
        assert server is not None and client is not None, (pid, peer["downlink"], client)
        assert server["ext_id"] == client["ext_id"], (server, client)
        assert server["stamped"] > 200 and server["feedbacks"] > 10, server
        assert server["reported"] >= 0.5 * server["stamped"], server
        assert server["unknown"] <= 0.02 * server["reported"] + 5, server
        assert client["feedbacks"] >= server["feedbacks"] and client["send_errors"] == 0, (server, client)
