"""Video FEC toward subscribers: what is offered, how much FEC for how much loss, and that
the FEC sent after a frame rebuilds a lost packet of it byte for byte."""

from __future__ import annotations

import random

from aiortc import RTCPeerConnection, sdp

from media.sdp_tweaks import split_sections
from media.sdp_video_fec import VideoFecPayloadTypes, offer_video_fec, video_fec_by_mid, video_fec_in_section
from media.ulpfec import UlpfecDecoder
from media.video_fec import GROUP_FOR_LOSS, OFF_BELOW_LOSS, VideoFecSender, group_for_loss, red_wrap

from .test_ulpfec import SSRC, VP8_PT, media

PTS = VideoFecPayloadTypes(red=116, ulpfec=118, rtx=117)


async def test_sending_and_publishing_video_sections_offer_red_ulpfec_and_rtx_for_red():
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")  # a publisher's section
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")  # what a subscriber receives
    offer = (await pc.createOffer()).sdp
    await pc.close()

    tweaked = offer_video_fec(offer)
    assert offer_video_fec(tweaked) == tweaked  # idempotent
    sections = split_sections(tweaked)[1]
    assert video_fec_in_section(sections[1]) is None  # audio
    parsed = sdp.SessionDescription.parse(tweaked)  # still SDP aiortc reads
    for index in (0, 2):
        fec = video_fec_in_section(sections[index])
        assert fec is not None and fec.rtx is not None
        assert len({fec.red, fec.ulpfec, fec.rtx}) == 3
        used = [int(f) for f in sections[index][0].split()[3:]]
        assert len(used) == len(set(used))  # no payload type taken twice
        # the media codecs untouched
        assert [c.name for c in parsed.media[index].rtp.codecs if c.name.lower() in ("vp8", "h264")] == \
               [c.name for c in sdp.SessionDescription.parse(offer).media[index].rtp.codecs
                if c.name.lower() in ("vp8", "h264")]
    assert list(video_fec_by_mid(tweaked)) == [parsed.media[0].rtp.muxId, parsed.media[2].rtp.muxId]


def test_a_section_without_vp8_or_vp9_is_left_alone():
    section = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=sendonly\r\na=mid:1\r\na=rtpmap:102 H264/90000\r\n"
    assert offer_video_fec(section) == section


def test_rtx_that_is_not_for_red_is_not_taken_for_it():
    section = ["m=video 9 UDP/TLS/RTP/SAVPF 96 97 116 118", "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000",
               "a=fmtp:97 apt=96", "a=rtpmap:116 red/90000", "a=rtpmap:118 ulpfec/90000"]
    assert video_fec_in_section(section) == VideoFecPayloadTypes(red=116, ulpfec=118, rtx=None)


def test_payload_types_that_are_not_valid_or_taken_twice_give_no_fec():
    base = ["m=video 9 UDP/TLS/RTP/SAVPF 96 116 118", "a=rtpmap:96 VP8/90000"]
    assert video_fec_in_section(base + ["a=rtpmap:116 red/90000", "a=rtpmap:118 ulpfec/90000"]) is not None
    # ulpfec on VP8's number: FEC would reach the decoder as media
    assert video_fec_in_section(base + ["a=rtpmap:116 red/90000", "a=rtpmap:96 ulpfec/90000"]) is None
    # past 7 bits: the number would spill into the marker bit
    assert video_fec_in_section(base + ["a=rtpmap:200 red/90000", "a=rtpmap:118 ulpfec/90000"]) is None


def test_more_loss_means_smaller_groups_and_fec_stops_with_hysteresis():
    assert group_for_loss(0.0, active=False) is None
    assert group_for_loss(0.02, active=False) is None
    groups = [group_for_loss(loss, active=False) for loss in (0.03, 0.06, 0.12, 0.2, 0.3)]
    assert groups == sorted(groups, reverse=True) and groups[-1] == 2
    # once on, it stays on until loss is well below where it started
    assert group_for_loss(0.02, active=True) == GROUP_FOR_LOSS[-1][1]
    assert group_for_loss(OFF_BELOW_LOSS / 2, active=True) is None


def test_fec_goes_out_after_the_frame_and_rebuilds_a_lost_packet_exactly():
    rng = random.Random(3)
    sender = VideoFecSender(PTS)
    assert sender.protect(media(100, rng)) == []  # no loss measured: no FEC
    sender.update_loss(0.3)
    assert sender.group == 2
    frame = [media(101 + i, rng, marker=(i == 4), timestamp=180_000) for i in range(5)]
    sent_after = [sender.protect(p) for p in frame]
    assert sent_after[:4] == [[], [], [], []]  # nothing between packets of a frame
    fec = sent_after[4]
    assert len(fec) == 3 and all(p[0] == PTS.ulpfec for p in fec)  # RED block header: ulpfec, F=0

    for lost in range(5):
        decoder = UlpfecDecoder(SSRC)
        recovered = []
        for i, packet in enumerate(frame):
            if i != lost:
                recovered += decoder.add_media(packet)
        for payload in fec:
            recovered += decoder.add_fec(payload[1:])
        assert recovered == [frame[lost]], lost

    sender.update_loss(0.0)
    assert not sender.active and sender.protect(media(106, rng, marker=True)) == []


def test_red_wrap_is_one_primary_block():
    assert red_wrap(VP8_PT, b"\x10\x20") == bytes([VP8_PT]) + b"\x10\x20"
