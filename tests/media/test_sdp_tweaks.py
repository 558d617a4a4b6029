"""The server's offers ask for Opus FEC and audio NACK, and stay valid SDP."""

from __future__ import annotations

from aiortc import RTCPeerConnection, sdp

from media.sdp_tweaks import enable_audio_resilience


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
    offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 stereo=1;useinbandfec=0\r\n"
    out = enable_audio_resilience(offer)
    fmtp = next(l for l in out.splitlines() if l.startswith("a=fmtp:111"))
    assert "stereo=1" in fmtp and "useinbandfec=1" in fmtp and "useinbandfec=0" not in fmtp


async def test_offers_sent_to_participants_carry_the_tweaks(sfu):
    await sfu.room()
    patient = await sfu.join("patient")
    offer = await patient.wait_for(lambda m: m["type"] == "offer")
    assert "useinbandfec=1" in offer["sdp"]
    assert "a=rtcp-fb:96 nack" in offer["sdp"].splitlines()  # 96: aiortc's Opus payload type
