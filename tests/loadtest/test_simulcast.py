"""The load-test publisher's simulcast: the answer, the layers' packets, the allocation, and the receivers
following a layer switch (no server: aiortc peers, senders and buffers driven directly)."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs import depayload
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import (
    RTCRtcpParameters,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpSendParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
)

from loadtest.clips import ClipSpec, frame_key, frame_keys, key_table
from loadtest.frames import vp8_is_keyframe
from loadtest.layer_share import attach_layer_shares, layer_shares, video_layers
from loadtest.preencoded import EncodedClip
from loadtest.publisher import StampedClipTrack
from loadtest.receiver import FrameBundle, InstrumentedBuffer, StreamRecord
from loadtest.simulcast_allocation import START_BITRATE, LayerAllocator, layers_that_fit
from loadtest.simulcast_answer import answer_with_simulcast, plan_simulcast, with_simulcast
from loadtest.simulcast_layers import DEFAULT_LAYERS, LayerClip, layer_specs, layers_for_offer, pick_rungs
from loadtest.simulcast_sdp import (
    REPAIRED_RID_URI,
    RID_URI,
    OfferedSimulcast,
    add_simulcast_to_answer,
    offered_simulcast,
)
from loadtest.simulcast_sender import (
    PROBES_ENV,
    SimulcastPlan,
    SimulcastSender,
    send_simulcast,
    simulcast_sender_of,
)
from media.sdp_simulcast import SIMULCAST_LADDER
from media.sdp_tweaks import join_sections, section_mid, split_sections

FPS = 30
FRAMES = 60
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96})
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
NEGOTIATED = [RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
              RTCRtpHeaderExtensionParameters(id=2, uri=ABS_SEND_TIME_URI)]
OFFERED = OfferedSimulcast(mid="1", rids=("h", "m", "l"), rid_extension=10, repaired_rid_extension=11)
LADDER_MESSAGE = [{"rid": "h", "scale_down": 1, "max_bitrate": 1_500_000},
                  {"rid": "m", "scale_down": 2, "max_bitrate": 500_000},
                  {"rid": "l", "scale_down": 4, "max_bitrate": 150_000}]


# --- helpers ---------------------------------------------------------------------------------------------------


def fake_vp8(tag: int, index: int, keyframe: bool, size: int) -> bytes:
    """Bytes a VP8 depacketizer passes through, with a keyframe's frame tag and start code (RFC 6386 9.1)."""
    head = bytes([0x10, tag, index, 0x9D, 0x01, 0x2A]) if keyframe else bytes([0x11, tag, index])
    return head + bytes([(index * 7 + tag) & 0xFF]) * (size - len(head))


def clip(tag: int, kbps: int, keyframes_every: int = 30, all_key: bool = False) -> EncodedClip:
    size = kbps * 1000 // 8 // FPS
    keys = [all_key or i % keyframes_every == 0 for i in range(FRAMES)]
    return EncodedClip(kind="video", codec="vp8", time_base=fractions.Fraction(1, FPS), duration=FRAMES,
                       packets=[fake_vp8(tag, i, k, size) for i, k in enumerate(keys)], pts=list(range(FRAMES)),
                       keyframes=keys)


def layer(tag: int, kbps: int, scale: float, variants: bool = True) -> LayerClip:
    return LayerClip(scale=scale, width=int(640 * scale), height=int(360 * scale), clip=clip(tag, kbps),
                     keyframes=clip(tag + 100, kbps * 3, all_key=True) if variants else None)


LAYERS = (layer(1, 1500, 1.0), layer(2, 500, 0.5), layer(3, 150, 0.25))


def extensions_map() -> HeaderExtensionsMap:
    """How the server parses the publisher's packets: the negotiated extensions and the two RID ones."""
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=NEGOTIATED + [
        RTCRtpHeaderExtensionParameters(id=10, uri=RID_URI),
        RTCRtpHeaderExtensionParameters(id=11, uri=REPAIRED_RID_URI)]))
    return ext_map


class Wire:
    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    async def send_rtp(self, data: bytes) -> None:
        (self.rtcp if is_rtcp(data) else self.rtp).append(data)

    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(d, extensions_map()) for d in self.rtp]


def new_sender(wire: Wire) -> RTCRtpSender:
    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()])
    transport._send_rtp = wire.send_rtp
    return RTCRtpSender("video", transport)


def parameters() -> RTCRtpSendParameters:
    return RTCRtpSendParameters(codecs=[VP8, RTX], headerExtensions=NEGOTIATED, muxId="1",
                                rtcp=RTCRtcpParameters(cname="publisher"))


def plan(layers: tuple[LayerClip, ...] = LAYERS) -> SimulcastPlan:
    return SimulcastPlan(offered=OFFERED, rids=OFFERED.rids, layers=layers)


def simulcast_sender(wire: Wire, layers: tuple[LayerClip, ...] = LAYERS, all_on: bool = True) -> SimulcastSender:
    """A sender as send() leaves it; `all_on`: every layer sent, as with a high estimate."""
    sender = SimulcastSender(new_sender(wire), plan(layers), parameters())
    for stream in sender.streams if all_on else []:
        stream.set_active(True)
    return sender


def by_rid(sender: SimulcastSender) -> dict:
    return {s.rid: s for s in sender.streams}


def server_offer(sdp: str) -> str:
    """An offer as our server makes it for a publisher (media/sdp_simulcast.py, per the wire contract)."""
    session, sections = split_sections(sdp)
    out = []
    for section in sections:
        if section[0].startswith("m=video"):
            last_extmap = max(i for i, line in enumerate(section) if line.startswith("a=extmap:"))
            section = (section[:last_extmap + 1] + [f"a=extmap:10 {RID_URI}", f"a=extmap:11 {REPAIRED_RID_URI}"]
                       + section[last_extmap + 1:] + ["a=rid:h recv", "a=rid:m recv", "a=rid:l recv",
                                                      "a=simulcast:recv h;m;l"])
        out.append(section)
    return join_sections(session, out)


def video_section(sdp: str) -> list[str]:
    return next(s for s in split_sections(sdp)[1] if s[0].startswith("m=video"))


# --- the answer ---------------------------------------------------------------------------------------------------


async def offer_and_answerer() -> tuple[RTCPeerConnection, RTCPeerConnection, str]:
    server = RTCPeerConnection()
    server.addTransceiver("audio", direction="recvonly")
    server.addTransceiver("video", direction="recvonly")
    offer = server_offer((await server.createOffer()).sdp)
    publisher = RTCPeerConnection()
    await publisher.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    return server, publisher, offer


async def test_the_answer_sends_the_offered_layers_as_chrome_writes_them():
    server, publisher, offer = await offer_and_answerer()
    try:
        offered = offered_simulcast(offer)
        mid = section_mid(video_section(offer))
        assert mid is not None and offered == {mid: OfferedSimulcast(mid, ("h", "m", "l"), 10, 11)}
        video = next(t for t in publisher.getTransceivers() if t.kind == "video")
        video.sender.replaceTrack(StampedClipTrack(LAYERS[0].clip))
        video.direction = "sendonly"
        answer = (await publisher.createAnswer()).sdp
        assert any(line.startswith("a=ssrc:") for line in video_section(answer))  # aiortc's, before the edit
        edited = add_simulcast_to_answer(answer, offered[mid])
        section = video_section(edited)
        assert section[-4:] == ["a=rid:h send", "a=rid:m send", "a=rid:l send", "a=simulcast:send h;m;l"]
        assert f"a=extmap:10 {RID_URI}" in section and f"a=extmap:11 {REPAIRED_RID_URI}" in section
        assert not any(line.startswith(("a=ssrc:", "a=ssrc-group:")) for line in section)  # SSRCs come in packets
        assert "a=sendonly" in section
        assert add_simulcast_to_answer(edited, offered[mid]) == edited  # idempotent
        assert video_section(answer)[0] == section[0]  # payload types untouched
        audio = [s for s in split_sections(edited)[1] if s[0].startswith("m=audio")]
        assert audio and not any(line.startswith(("a=rid", "a=simulcast")) for s in audio for line in s)
        # aiortc takes the edited answer, keeps the extmaps and drops rid/simulcast; the edit restores them
        await publisher.setLocalDescription(RTCSessionDescription(edited, "answer"))
        rebuilt = publisher.localDescription.sdp
        assert "a=simulcast:send" not in rebuilt
        assert video_section(with_simulcast(rebuilt, {mid: plan()}))[-1] == "a=simulcast:send h;m;l"
    finally:
        await publisher.close()
        await server.close()


def test_the_server_reads_the_answer_as_three_layers():
    sdp_simulcast = pytest.importorskip("media.sdp_simulcast")  # the server's side (being written alongside)
    answer = join_sections(["v=0"], [["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=sendonly", "a=mid:1",
                                      "a=extmap:1 " + MID_URI, "a=ssrc:1 cname:x", "a=rtpmap:96 VP8/90000"]])
    edited = add_simulcast_to_answer(answer, OFFERED)
    assert sdp_simulcast.answered_simulcast(edited) == {"1": ("h", "m", "l")}
    assert {(e.id, e.uri) for e in sdp_simulcast.rid_extensions(edited, "1")} == {(10, RID_URI),
                                                                                   (11, REPAIRED_RID_URI)}


def test_an_offer_without_simulcast_or_without_the_message_keeps_one_stream():
    plain = join_sections(["v=0"], [["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=recvonly", "a=mid:1"]])
    assert offered_simulcast(plain) == {}
    with_layers = server_offer(plain.replace("a=mid:1", "a=mid:1\r\na=extmap:1 " + MID_URI))
    message = {"sdp": with_layers, "publish": {"video": "1"}, "simulcast": LADDER_MESSAGE}
    assert plan_simulcast({**message, "simulcast": None}, LAYERS, FRAMES) is None  # the server did not ask
    assert plan_simulcast({**message, "sdp": plain}, LAYERS, FRAMES) is None  # nor did its SDP
    assert plan_simulcast(message, (), FRAMES) is None  # no layers prepared (--simulcast off)
    chosen = plan_simulcast(message, LAYERS, FRAMES)
    assert chosen is not None and chosen.rids == ("h", "m", "l") and chosen.layers == LAYERS
    assert chosen.notes == ()  # the sizes asked for, and under the caps


async def test_a_createanswer_wrapper_answers_simulcast_only_when_planned():
    server, publisher, offer = await offer_and_answerer()
    try:
        mid = section_mid(video_section(offer))
        assert mid is not None
        current: list = [None]
        chosen: dict[str, SimulcastPlan] = {}
        publisher.createAnswer = answer_with_simulcast(publisher, lambda: current[0], chosen)
        video = next(t for t in publisher.getTransceivers() if t.kind == "video")
        video.sender.replaceTrack(StampedClipTrack(LAYERS[0].clip))
        video.direction = "sendonly"
        assert "a=simulcast" not in (await publisher.createAnswer()).sdp and chosen == {}
        current[0] = SimulcastPlan(offered=offered_simulcast(offer)[mid], rids=("h", "m", "l"), layers=LAYERS)
        answer = await publisher.createAnswer()
        assert video_section(answer.sdp)[-1] == "a=simulcast:send h;m;l" and chosen == {mid: current[0]}
        assert getattr(video.sender, "_loadtest_simulcast_plan") is current[0]  # installed when it starts
    finally:
        await publisher.close()
        await server.close()


# --- the layers' packets -----------------------------------------------------------------------------------------


async def test_each_layer_sends_on_its_own_ssrc_with_its_rid():
    wire = Wire()
    sender = simulcast_sender(wire)
    for stream in sender.lowest_first:
        data = stream.frame_data(0)
        assert data == stream.layer.clip.packets[0]
        await sender.send_frame(stream, data, 0, fractions.Fraction(1, FPS), time.monotonic())
    packets = wire.packets()
    assert {p.extensions.rtp_stream_id for p in packets} == {"h", "m", "l"}
    ssrcs = {rid: {p.ssrc for p in packets if p.extensions.rtp_stream_id == rid} for rid in ("h", "m", "l")}
    assert all(len(s) == 1 for s in ssrcs.values()) and len(set.union(*ssrcs.values())) == 3
    assert ssrcs["h"] == {sender.sender._ssrc}  # the first layer keeps aiortc's SSRC
    assert all(p.extensions.mid == "1" and p.extensions.abs_send_time is not None for p in packets)
    assert all(p.extensions.repaired_rtp_stream_id is None and p.payload_type == 96 for p in packets)
    for rid, stream in by_rid(sender).items():
        mine = [p for p in packets if p.ssrc == stream.ssrc]
        assert mine[-1].marker == 1 and all(p.marker == 0 for p in mine[:-1])
        assert [p.sequence_number for p in mine] == [(mine[0].sequence_number + i) & 0xFFFF for i in range(len(mine))]
    assert len({p.timestamp for p in packets}) == 3  # an RTP timestamp offset per stream, as libwebrtc


async def test_a_nack_is_answered_on_the_layers_rtx_ssrc_with_the_repaired_rid_once_per_rtt():
    wire = Wire()
    sender = simulcast_sender(wire)
    m = by_rid(sender)["m"]
    await sender.send_frame(m, m.frame_data(0), 0, fractions.Fraction(1, FPS), time.monotonic())
    original = wire.packets()[0]
    wire.rtp.clear()
    m.rtt_s = 10.0  # an RTT measured (and long): a second NACK within it is not answered
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=5, media_ssrc=m.ssrc, lost=[original.sequence_number])
    await sender.handle_rtcp_packet(nack)
    await sender.handle_rtcp_packet(nack)
    (rtx,) = wire.packets()
    assert rtx.ssrc == m.rtx_ssrc and rtx.payload_type == 97
    assert rtx.extensions.repaired_rtp_stream_id == "m" and rtx.extensions.rtp_stream_id is None
    assert rtx.extensions.mid == "1"
    assert rtx.payload[:2] == original.sequence_number.to_bytes(2, "big") and rtx.payload[2:] == original.payload
    assert m.retransmissions == 1 and m.guard.suppressed == 1
    # a NACK for another layer's SSRC, or for a packet never sent, resends nothing
    await sender.handle_rtcp_packet(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=5, media_ssrc=by_rid(sender)["h"].ssrc,
                                                    lost=[original.sequence_number]))
    assert len(wire.rtp) == 1 and by_rid(sender)["h"].nacks_unanswered == 1


async def test_a_pli_on_a_layers_ssrc_gets_that_layer_a_keyframe_variant():
    wire = Wire()
    sender = simulcast_sender(wire)
    streams = by_rid(sender)
    for stream in streams.values():
        stream.frame_data(0)  # started
    await sender.handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=5, media_ssrc=streams["l"].ssrc))
    assert streams["l"].frame_data(5) == LAYERS[2].keyframes.packets[5]  # frame 5 of the clip, as a keyframe
    assert streams["l"].frame_data(6) == LAYERS[2].clip.packets[6]  # then the regular clip again
    assert streams["h"].frame_data(5) == LAYERS[0].clip.packets[5]  # the other layers carry on
    assert streams["l"].keyframe_requests == 1 and streams["l"].keyframes_on_request == 1


async def test_sender_reports_go_out_per_layer_and_receiver_reports_give_each_layer_its_rtt():
    wire = Wire()
    sender = simulcast_sender(wire)
    for stream in sender.lowest_first:
        await sender.send_frame(stream, stream.frame_data(0), 0, fractions.Fraction(1, FPS), time.monotonic())
    await sender._send_rtcp(sender.sender_reports())
    packets = RtcpPacket.parse(wire.rtcp[-1])
    reports = {p.ssrc: p for p in packets if isinstance(p, RtcpSrPacket)}
    assert set(reports) == {s.ssrc for s in sender.streams}
    for stream in sender.streams:
        assert reports[stream.ssrc].sender_info.rtp_timestamp == stream.rtp_timestamp
        assert reports[stream.ssrc].sender_info.packet_count == stream.packet_count > 0
    m = by_rid(sender)["m"]
    block = RtcpReceiverInfo(ssrc=m.ssrc, fraction_lost=64, packets_lost=3, highest_sequence=m.seq, jitter=0,
                             lsr=m.lsr, dlsr=0x8000)  # held half a second at the receiver
    assert m.lsr_time is not None
    m.lsr_time -= 0.6
    await sender.handle_rtcp_packet(RtcpRrPacket(ssrc=5, reports=[block]))
    assert m.rtt_s == pytest.approx(0.1, abs=0.05) and m.fraction_lost == 0.25
    assert by_rid(sender)["h"].rtt_s is None


async def test_remb_for_the_layers_sets_the_allocation_lowest_first():
    wire = Wire()
    sender = simulcast_sender(wire, all_on=False)
    streams = by_rid(sender)
    assert [s.rid for s in sender.lowest_first] == ["l", "m", "h"]
    active = {rid for rid, s in streams.items() if s.active}
    assert active == {"l"}  # 300 kbit/s to start: l (150) fits, l + m (650) does not
    await sender.handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=5, media_ssrc=0,
                                                   fci=pack_remb_fci(700_000, [streams["h"].ssrc])))
    assert {rid for rid, s in streams.items() if s.active} == {"l", "m"}
    # m starts at a keyframe: its variant, as it was off until now
    assert streams["m"].frame_data(7) == LAYERS[1].keyframes.packets[7]
    await sender.handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=5, media_ssrc=0,
                                                   fci=pack_remb_fci(700_000, [1234])))  # not ours: ignored
    assert sender.remb_bitrate == 700_000


async def test_a_layer_without_keyframe_variants_restarts_at_the_clips_next_keyframe():
    sender = simulcast_sender(Wire(), layers=(layer(1, 1500, 1.0, variants=False), layer(2, 500, 0.5, False),
                                              layer(3, 150, 0.25, False)))
    m = by_rid(sender)["m"]
    m.set_active(False)
    m.set_active(True)
    assert [m.frame_data(i) for i in (28, 29)] == [None, None]
    assert m.frame_data(30) == LAYERS[1].clip.packets[30] and m.waited_for_keyframe == 2
    m.request_keyframe()  # no variants: a PLI is left to the clip's keyframes, as the single stream does
    assert m.frame_data(31) == LAYERS[1].clip.packets[31]


async def test_the_sender_takes_over_an_aiortc_sender_and_stops_cleanly(monkeypatch):
    monkeypatch.delenv(PROBES_ENV, raising=False)  # probes on, as by default
    wire = Wire()
    sender = new_sender(wire)
    track = StampedClipTrack(LAYERS[0].clip)
    sender.replaceTrack(track)
    send_simulcast(sender, plan())
    await sender.send(parameters())
    simulcast = simulcast_sender_of(sender)
    assert simulcast is not None
    deadline = time.monotonic() + 10
    while len(track.sends) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    # RTCP for every layer's SSRC is routed to this sender
    router = sender.transport._rtp_router
    assert all(router.senders[s.ssrc] is sender and router.senders[s.rtx_ssrc] is sender for s in simulcast.streams)
    await sender.stop()
    assert sender._RTCRtpSender__rtp_exited.is_set() and sender._RTCRtpSender__rtcp_exited.is_set()
    sent = [p for p in wire.packets() if p.payload_type == VP8.payloadType]
    assert len(track.sends) >= 3 and {p.extensions.rtp_stream_id for p in sent} == {"l"}  # 300 kbit/s: l only
    assert all(p.ssrc == by_rid(simulcast)["l"].ssrc for p in sent)
    # after the first frame, Chrome's initial probes: padding on l's RTX SSRC (loadtest/initial_probes.py)
    padding = [p for p in wire.packets() if p.payload_type == RTX.payloadType]
    assert padding and all(p.ssrc == by_rid(simulcast)["l"].rtx_ssrc and p.padding_size for p in padding)
    assert simulcast.counters()["initial_probing"]["clusters"] >= 1


# --- which layers, and which encodings ------------------------------------------------------------------------------


def test_layers_that_fit_counts_from_the_lowest_and_keeps_the_lowest():
    rates = [150_000, 500_000, 1_500_000]
    assert layers_that_fit(100_000, rates) == 1
    assert layers_that_fit(649_999, rates) == 1
    assert layers_that_fit(650_000, rates) == 2
    assert layers_that_fit(2_150_000, rates) == 3


def test_the_allocation_drops_what_does_not_fit_and_probes_back_after_a_backoff():
    rates = [150_000, 500_000, 1_500_000]
    allocator = LayerAllocator(rates)
    assert allocator.active == layers_that_fit(START_BITRATE, rates) == 1
    now = 100.0
    assert allocator.on_remb(3_000_000, now) == 3  # all fit: all on at once (each from a keyframe), as Chrome
    assert allocator.switches == 1
    assert allocator.on_remb(1_000_000, now + 2) == 2  # the estimate fell below l + m + h: h stops
    assert allocator.on_remb(3_000_000, now + 3) == 2  # it fits again, but it just failed: wait
    assert allocator.on_remb(3_000_000, now + 8) == 3  # PROBE_BACKOFF_S later
    assert allocator.on_loss(0.3, now + 9) == 2  # 30 % lost: 2150 x 0.85 = 1830 kbit/s, h no longer fits


def test_headroom_probes_the_next_layer_which_stays_while_the_estimate_climbs_and_goes_on_a_cut():
    rates = [150_000, 500_000, 1_500_000]
    allocator = LayerAllocator(rates, start_bitrate=700_000)
    assert allocator.active == 2
    now = 100.0
    assert allocator.on_remb(700_000, now) == 2
    assert allocator.on_remb(780_000, now + 1) == 3  # 780 x 0.85 >= 650 sent: probe h
    assert allocator.probes == 1
    for step in range(1, 6):  # the estimate climbs (~8 %/s): the probe is given time
        assert allocator.on_remb(int(780_000 * 1.08 ** step), now + 1 + step) == 3
    assert allocator.on_remb(700_000, now + 7) == 2  # the estimator cut: over-use, h goes
    assert allocator.probes_failed == 1
    assert allocator.on_remb(900_000, now + 8) == 2  # backing off
    assert allocator.on_remb(900_000, now + 13) == 3  # tried again after the back-off
    assert allocator.on_remb(2_200_000, now + 14) == 3 and allocator._probing is False  # reached: it fits


def test_the_prepared_layers_are_the_servers_ladder():
    assert DEFAULT_LAYERS == tuple((layer.scale_down, layer.max_bitrate) for layer in SIMULCAST_LADDER)


def test_layers_are_the_clip_at_each_size_at_a_browsers_rate_under_the_cap():
    full = ClipSpec(width=1280, height=720, bitrate=1_500_000)
    top, middle, low = layer_specs(full)
    assert top == full  # the full size at its own rate is the clip itself
    assert (middle.width, middle.height, low.width, low.height) == (640, 360, 320, 180)
    assert (middle.bitrate, low.bitrate) == (500_000, 150_000)  # capped: pixels^0.75 would give 530 / 187 kbit/s
    assert (middle.fps, middle.keyframe_interval_s, middle.seed, middle.seconds) == (
        full.fps, full.keyframe_interval_s, full.seed, full.seconds)
    small = ClipSpec(width=854, height=480, bitrate=500_000)
    _, middle, low = layer_specs(small)
    assert (middle.width, low.width) == (428, 214)
    assert (middle.bitrate, low.bitrate) == (176_776, 62_500)  # under the caps: a quarter of the pixels costs 4^-0.75


def test_layers_are_picked_from_the_ladder_by_size_distinct_and_the_gaps_are_named():
    # the default ladder: full size twice (100 %, 60 %), 2/3 (35 %), 1/2 (20 %)
    picked, notes = pick_rungs([1.0, 1.0, 2 / 3, 0.5], [1.0, 0.6, 0.35, 0.2], [1.0, 0.5, 0.25])
    assert picked == [0, 2, 3]  # no quarter rung: m takes 2/3, l 1/2, so that the layers differ
    assert len(notes) == 2 and "1/2" in notes[0] and "1/4" in notes[1]
    _, named = pick_rungs([1.0, 1.0, 2 / 3, 0.5], [1.0, 0.6, 0.35, 0.2], [1.0, 0.5, 0.25], ["h", "m", "l"])
    assert named[0].startswith("layer m:") and named[1].startswith("layer l:")
    picked, notes = pick_rungs([1.0, 0.5, 0.25], [1.0, 0.3, 0.1], [1.0, 0.5, 0.25])
    assert picked == [0, 1, 2] and notes == []
    picked, notes = pick_rungs([1.0, 0.5], [1.0, 0.3], [1.0, 0.5, 0.25])
    assert picked == [0, 1, 1] and "share" in notes[-1]
    chosen, notes = layers_for_offer(LAYERS, [1, 2, 4])
    assert chosen == list(LAYERS) and notes == []


# --- receivers across a layer switch ----------------------------------------------------------------------------------


def test_a_subscriber_switched_between_layers_identifies_every_frame():
    """The server feeds a down-track from h, then m from one of m's keyframes on (same SSRC, sequence numbers
    running on): with every layer's frames in the key table, each frame is known by its clip index."""
    h, m = LAYERS[0].clip, LAYERS[1].clip
    table, duplicates = key_table(frame_keys(h), frame_keys(LAYERS[0].keyframes), frame_keys(m),
                                  frame_keys(LAYERS[1].keyframes))
    assert duplicates == 0
    record = StreamRecord(subscriber="s", mid="1", kind="video", codec="vp8", probe=False, by_marker=False,
                          keys=table)
    buffer = InstrumentedBuffer(capacity=512, is_video=True)
    buffer.mode = "browser"
    buffer.attach(record)
    packetizers = {"h": Vp8Encoder(), "m": Vp8Encoder()}
    # the layers' own picture IDs, unrelated: a keyframe starts a new chain whatever its picture ID
    packetizers["m"].picture_id = (packetizers["h"].picture_id + 1000) % (1 << 15)
    seq, released = 1000, []
    for index in range(45):
        source, data = ("h", h.packets[index]) if index < 30 else ("m", m.packets[index])
        packet = av.Packet(data)
        packet.pts, packet.time_base = index, h.time_base
        payloads, timestamp = packetizers[source].pack(packet)
        for i, payload in enumerate(payloads):
            rtp = RtpPacket(payload_type=96, marker=int(i == len(payloads) - 1), sequence_number=seq,
                            timestamp=timestamp, ssrc=42, payload=payload)
            rtp._data = depayload(VP8, payload)  # as aiortc's receiver sets it
            seq += 1
            _, out = buffer.add(rtp)
            if out is not None:
                released += out.frames if isinstance(out, FrameBundle) else [out]
    assert [e[0] for e in record.complete] == list(range(45))
    assert [frame_key(f.data) for f in released] == [frame_key(bytes(x)) for x in
                                                     [*h.packets[:30], *m.packets[30:45]]]
    assert record.complete[30][2] and vp8_is_keyframe(m.packets[30])  # the switch is at m's keyframe


# --- the layer each subscriber got, from the server's media summary ---------------------------------------------------


def test_layer_shares_weigh_each_sample_until_the_next_and_count_the_switches():
    def summary(layer, switches):
        return {"sub": {"receiving": {"pub:video": {"layer": layer, "layer_switches": switches},
                                      "pub:audio": {"packets": 1}}}}

    samples = [(t, video_layers("r", summary(layer, n)))
               for t, layer, n in [(0.0, None, 0), (0.5, "m", 1), (1.5, "m", 1), (2.0, "h", 2), (3.0, "h", 2)]]
    shares = layer_shares(samples, end=4.0)
    assert shares[("r", "sub", "pub")] == {"share": {"h": 0.5, "m": 0.375, "none": 0.125}, "switches": 2,
                                           "samples": 5, "last": "h"}
    streams = [{"subscriber": "sub", "publisher": "pub"}, {"subscriber": "sub", "publisher": "other"}]
    attach_layer_shares(streams, shares)
    assert streams[0]["layer_switches"] == 2 and streams[1]["layer_share"] is None
