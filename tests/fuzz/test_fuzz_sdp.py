"""The SDP edits and readers of media/sdp_tweaks.py and media/sdp_video_fec.py.

The readers (`answered_red_by_mid`, `video_fec_by_mid`) run on the answer a participant
sends, after aiortc has parsed it (media/peer.py MediaPeer.apply_answer): on any text they
return what they find and never raise. The offer edits run on aiortc's own offer; on any
text they return SDP or raise the one documented error, ValueError "no free payload type".

Properties: those error contracts on random text, on real SDP mutated line by line and on
generated well-formed SDP; on well-formed SDP the edits keep it parseable by aiortc, are
idempotent, and the readers find in the edited offer exactly what the edits added.
"""

from __future__ import annotations

import re

from aiortc import sdp as aiortc_sdp
from hypothesis import example, given
from hypothesis import strategies as st

from media.sdp_tweaks import (
    answered_red_by_mid,
    enable_audio_resilience,
    join_sections,
    offer_audio_red,
    split_sections,
)
from media.sdp_video_fec import offer_video_fec, video_fec_by_mid

# aiortc 1.16's offer for a participant's two publish sections and two receive slots
# (fingerprints and msids shortened)
AIORTC_OFFER = "\r\n".join([
    "v=0", "o=- 4005583147 4005583147 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1 2 3",
    "a=msid-semantic:WMS *",
    *(line for mid, kind, direction in (("0", "audio", "recvonly"), ("1", "video", "recvonly"),
                                         ("2", "audio", "sendonly"), ("3", "video", "sendonly"))
      for line in (
          f"m={kind} 9 UDP/TLS/RTP/SAVPF " + ("96 9 0 8" if kind == "audio" else "97 98 99 100 101 102"),
          "c=IN IP4 0.0.0.0", f"a={direction}", "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
          ("a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level" if kind == "audio"
           else "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
          f"a=mid:{mid}", "a=msid:46ecd015 04b35214", "a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp-mux",
          "a=ssrc:3917018004 cname:92b10c67",
          *(("a=rtpmap:96 opus/48000/2", "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000")
            if kind == "audio" else
            ("a=rtpmap:97 VP8/90000", "a=rtcp-fb:97 nack", "a=rtcp-fb:97 nack pli", "a=rtcp-fb:97 goog-remb",
             "a=rtpmap:98 rtx/90000", "a=fmtp:98 apt=97", "a=rtpmap:99 H264/90000", "a=rtcp-fb:99 nack",
             "a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
             "a=rtpmap:100 rtx/90000", "a=fmtp:100 apt=99", "a=rtpmap:101 H264/90000",
             "a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
             "a=rtpmap:102 rtx/90000", "a=fmtp:102 apt=101")),
          "a=ice-ufrag:iKn8", "a=ice-pwd:aKQfFySngYWkkHyR0yYaaY",
          "a=fingerprint:sha-256 C1:13:8B:94:A5:75:41:4D:01:C1:72:44:E6:13:E2:99:E5:F8:B1:E8:C5:4F:BF:1E",
          "a=setup:actpass")),
]) + "\r\n"

# a Chrome-like answer to the tweaked offer: red over Opus, video red/ulpfec/rtx-for-red kept
CHROME_ANSWER = "\r\n".join([
    "v=0", "o=- 8199 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 63 111", "c=IN IP4 0.0.0.0", "a=mid:0", "a=sendonly",
    "a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111", "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 nack",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 116 117 118", "c=IN IP4 0.0.0.0", "a=mid:1", "a=sendonly",
    "a=rtpmap:96 VP8/90000", "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=rtpmap:116 red/90000",
    "a=rtpmap:117 rtx/90000", "a=fmtp:117 apt=116", "a=rtpmap:118 ulpfec/90000",
]) + "\r\n"

NO_FREE_PAYLOAD_TYPE = "no free payload type"

# --- line-level mutation of real SDP -----------------------------------------------------------

numbers = (st.integers(0, 300).map(str)
           | st.sampled_from(("", "-1", "127", "128", "65535", "9" * 5000, "0" * 4400 + "96", "²", "١٢", "0x60",
                              "96a", " 96", "96 ")))
names = st.sampled_from(("opus", "OPUS", "red", "RED", "ulpfec", "rtx", "VP8", "vp9", "H264", "PCMU", "red/"))
interesting_lines = st.one_of(
    st.builds("a=rtpmap:{} {}/{}".format, numbers, names, st.sampled_from(("48000", "90000", "48000/2", ""))),
    st.builds("a=fmtp:{} apt={}".format, numbers, numbers),
    st.builds("a=fmtp:{} {}/{}".format, numbers, numbers, numbers),
    st.builds("a=rtcp-fb:{} nack".format, numbers),
    st.builds("m={} 9 UDP/TLS/RTP/SAVPF {}".format, st.sampled_from(("audio", "video", "application", "")),
              st.lists(numbers, max_size=6).map(" ".join)),
    st.sampled_from(("a=sendonly", "a=recvonly", "a=sendrecv", "a=mid:", "a=mid:0", "a=mid:1", "", "m=", "a=",
                     "a=rtpmap:", "a=fmtp:", "A=RTPMAP:96 opus/48000/2", "a=rtpmap:96 opus/48000/2")),
    st.text(max_size=40),
)


@st.composite
def mutated_sdp(draw: st.DrawFn, base: str) -> str:
    lines = base.split("\r\n")
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(("delete", "duplicate", "swap", "number", "case", "insert", "truncate", "text")))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            lines.append(draw(interesting_lines))
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "number":
            runs = list(re.finditer(r"\d+", lines[i]))
            if runs:
                run = runs[draw(st.integers(0, len(runs) - 1))]
                lines[i] = lines[i][:run.start()] + draw(numbers) + lines[i][run.end():]
        elif op == "case":
            lines[i] = draw(st.sampled_from((str.upper, str.lower, str.swapcase)))(lines[i])
        elif op == "insert":
            lines.insert(i, draw(interesting_lines))
        elif op == "truncate":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=6)) + lines[i][at:]
    return draw(st.sampled_from(("\r\n", "\n", "\r"))).join(lines)


any_sdp = st.one_of(
    st.text(max_size=300),
    st.lists(interesting_lines, max_size=20).map("\r\n".join),
    mutated_sdp(AIORTC_OFFER),
    mutated_sdp(CHROME_ANSWER),
    mutated_sdp(offer_video_fec(offer_audio_red(enable_audio_resilience(AIORTC_OFFER)))),
)

OFFER_EDITS = (enable_audio_resilience, offer_audio_red, offer_video_fec,
               lambda text: offer_video_fec(offer_audio_red(enable_audio_resilience(text))))  # as MediaPeer does


@given(any_sdp)
@example("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nA=RTPMAP:96 opus/48000/2\r\n")
@example("m=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 OPUS/48000/2\r\n")
@example("m=video 9 UDP/TLS/RTP/SAVPF 97 ²\r\na=sendonly\r\na=rtpmap:97 VP8/90000\r\n")
@example("m=audio 9 UDP/TLS/RTP/SAVPF 97 " + "9" * 5000 + "\r\na=rtpmap:97 opus/48000/2\r\n")
def test_offer_edits_return_sdp_or_the_documented_error(text):
    for edit in OFFER_EDITS:
        try:
            out = edit(text)
        except ValueError as exc:
            assert NO_FREE_PAYLOAD_TYPE in str(exc), repr(exc)
            continue
        assert isinstance(out, str)


@given(any_sdp)
@example("m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=rtpmap:" + "9" * 5000 + " red/90000\r\n")
@example("m=audio 9 UDP/TLS/RTP/SAVPF 63\r\na=mid:0\r\na=rtpmap:63 red/48000/2\r\na=fmtp:63 " + "1" * 5000
         + "/" + "1" * 5000 + "\r\na=rtpmap:" + "1" * 5000 + " opus/48000/2\r\n")
def test_answer_readers_never_raise_and_name_listed_payload_types(text):
    for mid, (red, opus) in answered_red_by_mid(text).items():
        assert isinstance(mid, str) and isinstance(red, int) and isinstance(opus, int)
    for mid, fec in video_fec_by_mid(text).items():
        assert isinstance(mid, str)
        assert 0 <= fec.red <= 127 and 0 <= fec.ulpfec <= 127 and fec.red != fec.ulpfec
        assert fec.rtx is None or (0 <= fec.rtx <= 127 and fec.rtx not in (fec.red, fec.ulpfec))


@given(any_sdp)
def test_what_aiortc_accepts_as_an_answer_our_readers_take_too(text):
    try:
        aiortc_sdp.SessionDescription.parse(text)
    except Exception:  # MediaPeer refuses such an answer before our readers see it
        return
    answered_red_by_mid(text)
    video_fec_by_mid(text)


@given(any_sdp)
def test_sections_split_and_join_back_to_the_same_sections(text):
    session, sections = split_sections(text)
    assert split_sections(join_sections(session, sections)) == (session, sections)


# --- generated well-formed SDP ------------------------------------------------------------------
# (payload types static or dynamic: aiortc refuses 64-95, which collide with RTCP)

AUDIO_CODECS = ("opus/48000/2", "G722/8000", "PCMU/8000", "PCMA/8000")
VIDEO_CODECS = ("VP8/90000", "VP9/90000", "H264/90000")


@st.composite
def well_formed_offers(draw: st.DrawFn) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for mid in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(("audio", "video")))
        codecs = draw(st.lists(st.sampled_from(AUDIO_CODECS if kind == "audio" else VIDEO_CODECS),
                               min_size=1, max_size=4))
        with_rtx = kind == "video" and draw(st.booleans())
        pts = draw(st.lists(st.integers(0, 34) | st.integers(96, 127), min_size=len(codecs) * (2 if with_rtx else 1),
                            max_size=len(codecs) * (2 if with_rtx else 1), unique=True))
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts))}", "c=IN IP4 0.0.0.0", f"a=mid:{mid}",
                  "a=" + draw(st.sampled_from(("sendonly", "recvonly", "sendrecv", "inactive")))]
        for i, codec in enumerate(codecs):
            lines.append(f"a=rtpmap:{pts[i]} {codec}")
            if draw(st.booleans()):
                lines.append(f"a=rtcp-fb:{pts[i]} nack")
            if codec.startswith("opus") and draw(st.booleans()):
                lines.append(f"a=fmtp:{pts[i]} " + draw(st.sampled_from(("stereo=1", "useinbandfec=0;stereo=1",
                                                                         "minptime=20"))))
            if with_rtx:
                lines += [f"a=rtpmap:{pts[len(codecs) + i]} rtx/90000", f"a=fmtp:{pts[len(codecs) + i]} apt={pts[i]}"]
    return "\r\n".join(lines) + "\r\n"


@given(well_formed_offers())
def test_offer_edits_on_well_formed_sdp_parse_are_idempotent_and_read_back(text):
    try:
        edited = offer_video_fec(offer_audio_red(enable_audio_resilience(text)))
    except ValueError as exc:  # every dynamic and static number taken: possible only with many codecs
        assert NO_FREE_PAYLOAD_TYPE in str(exc)
        return
    parsed = aiortc_sdp.SessionDescription.parse(edited)
    assert len(parsed.media) == len(aiortc_sdp.SessionDescription.parse(text).media)
    for edit in (enable_audio_resilience, offer_audio_red, offer_video_fec):
        assert edit(edited) == edited
    red_by_mid, fec_by_mid = answered_red_by_mid(edited), video_fec_by_mid(edited)
    for section in split_sections(text)[1]:
        mid = section[1 + next(i for i, line in enumerate(section[1:]) if line.startswith("a=mid:"))][6:]
        has = {line.split(" ", 1)[1].split("/")[0].lower() for line in section if line.startswith("a=rtpmap:")}
        if section[0].startswith("m=audio"):
            assert (mid in red_by_mid) == ("opus" in has)
        one_way = any(line in ("a=sendonly", "a=recvonly") for line in section)
        if section[0].startswith("m=video"):
            assert (mid in fec_by_mid) == (one_way and bool(has & {"vp8", "vp9"}))
