"""The server's offers ask for RED, Opus FEC and audio NACK, and stay valid SDP."""

from __future__ import annotations

from aiortc import RTCPeerConnection, sdp

from media.sdp_tweaks import answered_red_by_mid, enable_audio_resilience, offer_audio_red


async def test_real_offer_gets_fec_and_nack_and_still_parses():
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    offer = await pc.createOffer()
    tweaked = enable_audio_resilience(offer.sdp)
    await pc.close()

    parsed = sdp.SessionDescription.parse(tweaked)
    audio = next(m for m in parsed.media if m.kind == "audio")
    opus = next(c for c in audio.rtp.codecs if c.name.lower() == "opus")
    assert opus.parameters.get("useinbandfec") == 1
    assert any(fb.type == "nack" and not fb.parameter for fb in opus.rtcpFeedback)
    video = next(m for m in parsed.media if m.kind == "video")
    assert len(video.rtp.codecs) > 0  # video untouched
    assert enable_audio_resilience(tweaked) == tweaked  # idempotent


def test_existing_fmtp_parameters_are_kept():
    offer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
             "a=fmtp:111 stereo=1;useinbandfec=0\r\n")
    out = enable_audio_resilience(offer)
    fmtp = next(line for line in out.splitlines() if line.startswith("a=fmtp:111"))
    assert "stereo=1" in fmtp and "useinbandfec=1" in fmtp and "useinbandfec=0" not in fmtp


async def test_offers_sent_to_participants_carry_the_tweaks(sfu):
    await sfu.room()
    patient = await sfu.join("patient")
    offer = await patient.wait_for(lambda m: m["type"] == "offer")
    assert "useinbandfec=1" in offer["sdp"]
    assert "a=rtcp-fb:96 nack" in offer["sdp"].splitlines()  # 96: aiortc's Opus payload type


async def _three_section_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")  # the participant publishes here
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="sendonly")  # a receive slot
    offer = await pc.createOffer()
    await pc.close()
    return offer.sdp


async def test_every_audio_section_gets_fec_and_nack_not_only_the_first():
    tweaked = enable_audio_resilience(await _three_section_offer())
    for media in sdp.SessionDescription.parse(tweaked).media:
        if media.kind == "audio":
            opus = next(c for c in media.rtp.codecs if c.name.lower() == "opus")
            assert opus.parameters.get("useinbandfec") == 1, media.rtp.muxId
            assert any(fb.type == "nack" for fb in opus.rtcpFeedback), media.rtp.muxId


async def test_red_is_offered_first_for_opus_and_read_back_from_the_answer():
    offer = offer_audio_red(enable_audio_resilience(await _three_section_offer()))
    sections = [m for m in sdp.SessionDescription.parse(offer).media]
    for media in sections:
        if media.kind == "audio":
            first = media.rtp.codecs[0]
            opus = next(c for c in media.rtp.codecs if c.name.lower() == "opus")
            assert first.name.lower() == "red" and first.clockRate == 48000
            assert f"a=fmtp:{first.payloadType} {opus.payloadType}/{opus.payloadType}" in offer.splitlines()
        else:
            assert all(c.name.lower() != "red" for c in media.rtp.codecs)
    assert offer_audio_red(offer) == offer  # idempotent
    # read back: what a browser answering this offer accepted, per mid
    assert answered_red_by_mid(offer) == {"0": (63, 96), "2": (63, 96)}
    without = offer.replace("a=rtpmap:63 red/48000/2\r\n", "")
    assert answered_red_by_mid(without) == {}


def test_red_takes_a_free_payload_type_when_63_is_used():
    offer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=mid:0\r\na=rtpmap:63 PCMU/8000\r\n"
             "a=rtpmap:111 opus/48000/2\r\n")
    out = offer_audio_red(offer)
    assert out.splitlines()[1] == "m=audio 9 UDP/TLS/RTP/SAVPF 96 63 111"
    assert "a=fmtp:96 111/111" in out.splitlines()


def test_a_red_answer_pointing_at_something_else_than_opus_is_ignored():
    answer = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 63 0\r\na=mid:0\r\na=rtpmap:63 red/48000/2\r\n"
              "a=fmtp:63 0/0\r\na=rtpmap:0 PCMU/8000\r\n")
    assert answered_red_by_mid(answer) == {}
