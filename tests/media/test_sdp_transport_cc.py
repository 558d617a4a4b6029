"""transport-cc in the server's offers, and what is read back from answers (media/sdp_transport_cc.py)."""

from __future__ import annotations

from media.rtp_writer import TRANSPORT_CC_URI
from media.sdp_transport_cc import PREFERRED_EXTENSION_ID, answered_transport_cc, offer_transport_cc
from media.sdp_tweaks import section_mid, split_sections

OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2 3",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0", "a=recvonly", "a=rtpmap:111 opus/48000/2",
    "m=audio 9 UDP/TLS/RTP/SAVPF 63 111", "a=mid:1", "a=sendonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=rtpmap:63 red/48000/2", "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "a=mid:2", "a=sendonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:5 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=rtpmap:97 VP8/90000", "a=rtcp-fb:97 nack", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97",
    "m=video 9 UDP/TLS/RTP/SAVPF 97", "a=mid:3", "a=recvonly", "a=rtpmap:97 VP8/90000",
]) + "\r\n"


def section(sdp: str, mid: str) -> list[str]:
    return next(s for s in split_sections(sdp)[1] if section_mid(s) == mid)


def test_send_only_sections_get_the_extension_and_feedback_for_their_media_codecs():
    offer = offer_transport_cc(OFFER)
    # 5 is taken by another extension in the bundle: the next free id, the same in every section
    assert f"a=extmap:2 {TRANSPORT_CC_URI}" in section(offer, "1")
    assert f"a=extmap:2 {TRANSPORT_CC_URI}" in section(offer, "2")
    assert "a=rtcp-fb:111 transport-cc" in section(offer, "1")
    assert "a=rtcp-fb:63 transport-cc" not in section(offer, "1")
    video = section(offer, "2")
    assert video.index("a=rtcp-fb:97 transport-cc") == video.index("a=rtpmap:97 VP8/90000") + 1
    assert "a=rtcp-fb:98 transport-cc" not in video


def test_publishing_sections_are_left_alone():
    offer = offer_transport_cc(OFFER)
    for mid in ("0", "3"):
        assert section(offer, mid) == section(OFFER, mid)


def test_offering_again_changes_nothing():
    once = offer_transport_cc(OFFER)
    assert offer_transport_cc(once) == once


def test_preferred_id_when_free():
    offer = offer_transport_cc(OFFER.replace("a=extmap:5 ", "a=extmap:6 "))
    assert f"a=extmap:{PREFERRED_EXTENSION_ID} {TRANSPORT_CC_URI}" in section(offer, "2")


def test_answer_needs_both_the_extension_and_the_feedback():
    answer = offer_transport_cc(OFFER).replace("a=sendonly", "a=recvonly")
    assert answered_transport_cc(answer) == {"1": 2, "2": 2}
    without_feedback = "\r\n".join(line for line in answer.split("\r\n") if "rtcp-fb:97 transport-cc" not in line)
    assert answered_transport_cc(without_feedback) == {"1": 2}
    assert answered_transport_cc(OFFER) == {}


def test_answer_with_an_id_a_one_byte_header_cannot_carry_is_ignored():
    answer = offer_transport_cc(OFFER).replace(f"a=extmap:2 {TRANSPORT_CC_URI}", f"a=extmap:15 {TRANSPORT_CC_URI}")
    assert answered_transport_cc(answer) == {}
