"""The simulcast edits of the server's offers and what is read back from answers (media/sdp_simulcast.py)."""

from __future__ import annotations

from media.sdp_simulcast import (
    PREFERRED_EXTENSION_IDS,
    REPAIRED_RID_URI,
    RID_URI,
    SIMULCAST_LADDER,
    answered_layers,
    answered_simulcast,
    offer_simulcast,
    rid_extensions,
)
from media.sdp_tweaks import section_mid, split_sections

OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0", "a=recvonly", "a=rtpmap:111 opus/48000/2",
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "a=mid:1", "a=recvonly",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=rtpmap:97 VP8/90000", "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97",
    "m=video 9 UDP/TLS/RTP/SAVPF 97", "a=mid:2", "a=sendonly", "a=rtpmap:97 VP8/90000",
]) + "\r\n"


def section(sdp: str, mid: str) -> list[str]:
    return next(s for s in split_sections(sdp)[1] if section_mid(s) == mid)


def test_the_publishers_receive_only_video_section_asks_for_the_ladder():
    edited = offer_simulcast(OFFER)
    video = section(edited, "1")
    rids = [layer.rid for layer in SIMULCAST_LADDER]
    assert [line for line in video if line.startswith("a=rid:")] == [f"a=rid:{r} recv" for r in rids]
    assert f"a=simulcast:recv {';'.join(rids)}" in video
    assert f"a=extmap:10 {RID_URI}" in video and f"a=extmap:11 {REPAIRED_RID_URI}" in video
    # the extmaps join the others, before the codecs
    assert video.index(f"a=extmap:10 {RID_URI}") < video.index("a=rtpmap:97 VP8/90000")
    # audio and the receive slots (send-only) are left as they were
    assert section(edited, "0") == section(OFFER, "0")
    assert section(edited, "2") == section(OFFER, "2")


def test_editing_twice_changes_nothing_more():
    once = offer_simulcast(OFFER)
    assert offer_simulcast(once) == once


def test_extension_ids_in_use_are_not_taken_again():
    taken = OFFER.replace("a=extmap:3 http", f"a=extmap:{PREFERRED_EXTENSION_IDS[RID_URI]} http")
    video = section(offer_simulcast(taken), "1")
    ids = [line.split(" ")[0] for line in video if line.startswith("a=extmap:")]
    assert len(ids) == len(set(ids)) == 4


ANSWER_VIDEO = [
    "m=video 9 UDP/TLS/RTP/SAVPF 97 98", "a=mid:1", "a=sendonly",
    f"a=extmap:10 {RID_URI}", f"a=extmap:11 {REPAIRED_RID_URI}",
    "a=rtpmap:97 VP8/90000", "a=rid:h send", "a=rid:m send", "a=rid:l send",
]


def answer(*simulcast: str) -> str:
    return "\r\n".join(["v=0", "o=- 2 2 IN IP4 0.0.0.0", "s=-", "t=0 0", *ANSWER_VIDEO, *simulcast]) + "\r\n"


def test_the_answered_rids_are_read_in_order_and_only_those_offered():
    assert answered_simulcast(answer("a=simulcast:send h;m;l")) == {"1": ("h", "m", "l")}
    # alternatives: the first of each; '~' marks one the sender starts paused; unknown RIDs dropped
    assert answered_simulcast(answer("a=simulcast:send h,x;~m;zz")) == {"1": ("h", "m")}
    assert answered_simulcast(answer()) == {}  # no a=simulcast: one stream as before


def test_the_rid_extensions_are_read_from_the_answer():
    extensions = rid_extensions(answer("a=simulcast:send h;m;l"), "1")
    assert {(e.id, e.uri) for e in extensions} == {(10, RID_URI), (11, REPAIRED_RID_URI)}
    assert rid_extensions(answer(), "7") == []


def test_the_layers_are_the_ladders_rids_answered_lowest_first():
    assert answered_layers(answer("a=simulcast:send h;m;l")) == {"1": ("l", "m", "h")}
    # a RID the ladder does not have is no layer of ours: ignored, not an error
    unknown = answer("a=simulcast:send zz;h").replace("a=rid:l send", "a=rid:zz send")
    assert answered_layers(unknown) == {"1": ("h",)}
    assert answered_layers(answer("a=simulcast:send zz").replace("a=rid:l send", "a=rid:zz send")) == {}
