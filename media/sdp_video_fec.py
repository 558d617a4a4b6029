"""Offering and reading back video RED + ULPFEC on the server's sending m-sections.

A browser decodes ULPFEC only from RED-wrapped video (libwebrtc hands a packet
to its FEC receiver only when its payload type is red), and retransmits RED
packets over an RTX payload type whose apt is red. So each m-section where the
server sends video offers three payload types beside the media codecs:
`red/90000`, `ulpfec/90000` and `rtx/90000` with `apt=<red>`. The sections a
participant publishes on offer them too: a browser then sends its video as RED,
with ULPFEC while its link loses packets, which the server decodes
(media/uplink_fec.py) before forwarding the media alone.

aiortc does not negotiate these (not in aiortc.codecs.CODECS), so the answer is
read here and the payload types are added to the down-track's parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from .sdp_tweaks import PAYLOAD_TYPE, join_sections, m_line_payload_types, section_mid, split_sections

# Chrome's own numbers, when free in the section.
PREFERRED = {"red": 116, "rtx": 117, "ulpfec": 118}
# Chrome sends and accepts ULPFEC for these (not for H.264); we protect the same.
PROTECTABLE = ("vp8", "vp9")


@dataclass(frozen=True)
class VideoFecPayloadTypes:
    red: int
    ulpfec: int
    rtx: Optional[int]  # RTX for red (apt=red); None: retransmit RED packets in the media stream


def _rtpmap(section: list[str]) -> dict[int, str]:
    found = {}
    for line in section:
        m = re.match(rf"a=rtpmap:({PAYLOAD_TYPE}) ([^/\s]+)/", line)
        if m:
            found[int(m.group(1))] = m.group(2).lower()
    return found


def _apt(section: list[str], pt: int) -> Optional[int]:
    for line in section:
        m = re.match(rf"a=fmtp:{pt} .*\bapt=({PAYLOAD_TYPE})(?![0-9])", line)
        if m:
            return int(m.group(1))
    return None


def _is_one_way_video(section: list[str]) -> bool:
    """A video section the server sends on (sendonly) or a participant publishes on (recvonly)."""
    return section[0].startswith("m=video") and any(line.strip() in ("a=sendonly", "a=recvonly") for line in section)


def _free_payload_type(used: set[int], preferred: int) -> int:
    for pt in [preferred, *range(96, 128), *range(35, 64)]:
        if pt not in used:
            return pt
    raise ValueError("no free payload type for video FEC")


def offer_video_fec(sdp: str) -> str:
    """Add red, ulpfec and rtx-for-red to every sendonly or recvonly video m-section carrying VP8 or VP9."""
    session, sections = split_sections(sdp)
    return join_sections(session, [_fec_section(s) if _is_one_way_video(s) else s for s in sections])


def _fec_section(section: list[str]) -> list[str]:
    names = _rtpmap(section)
    if not any(name in PROTECTABLE for name in names.values()) or "red" in names.values():
        return section
    fields = section[0].split(" ")
    used = m_line_payload_types(section[0])
    chosen: dict[str, int] = {}
    for name in ("red", "rtx", "ulpfec"):
        chosen[name] = _free_payload_type(used, PREFERRED[name])
        used.add(chosen[name])
    section = list(section)
    section[0] = " ".join(fields + [str(chosen["red"]), str(chosen["rtx"]), str(chosen["ulpfec"])])
    last_codec_line = max(i for i, line in enumerate(section)
                          if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")))
    section[last_codec_line + 1:last_codec_line + 1] = [
        f"a=rtpmap:{chosen['red']} red/90000",
        f"a=rtpmap:{chosen['rtx']} rtx/90000",
        f"a=fmtp:{chosen['rtx']} apt={chosen['red']}",
        f"a=rtpmap:{chosen['ulpfec']} ulpfec/90000",
    ]
    return section


def video_fec_in_section(section: list[str]) -> Optional[VideoFecPayloadTypes]:
    """The red/ulpfec (and rtx-for-red) payload types a video m-section lists, if both."""
    if not section or not section[0].startswith("m=video"):
        return None
    names = _rtpmap(section)
    if any(pt > 127 for pt in names) or _duplicate_rtpmap(section):
        return None  # not valid RTP payload types: take no FEC rather than send packets a receiver misreads
    red = next((pt for pt, name in names.items() if name == "red"), None)
    ulpfec = next((pt for pt, name in names.items() if name == "ulpfec"), None)
    if red is None or ulpfec is None:
        return None
    rtx = next((pt for pt, name in names.items() if name == "rtx" and _apt(section, pt) == red), None)
    return VideoFecPayloadTypes(red=red, ulpfec=ulpfec, rtx=rtx)


def _duplicate_rtpmap(section: list[str]) -> bool:
    pts = [m.group(1) for line in section if (m := re.match(r"a=rtpmap:(\d+) ", line))]
    return len(pts) != len(set(pts))


def video_fec_in_codecs(codecs: Iterable[RTCRtpCodecParameters]) -> Optional[VideoFecPayloadTypes]:
    """The red/ulpfec (and rtx-for-red) payload types among negotiated codecs (MediaPeer adds them)."""
    codecs = list(codecs)
    by_name = {c.mimeType.lower(): c.payloadType for c in codecs}
    red, ulpfec = by_name.get("video/red"), by_name.get("video/ulpfec")
    if red is None or ulpfec is None:
        return None
    rtx = next((c.payloadType for c in codecs
                if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") == red), None)
    return VideoFecPayloadTypes(red=red, ulpfec=ulpfec, rtx=rtx)


def video_fec_by_mid(sdp: str) -> dict[str, VideoFecPayloadTypes]:
    """mid -> payload types, for each video m-section of `sdp` listing red and ulpfec."""
    found: dict[str, VideoFecPayloadTypes] = {}
    for section in split_sections(sdp)[1]:
        mid = section_mid(section)
        fec = video_fec_in_section(section)
        if mid is not None and fec is not None:
            found[mid] = fec
    return found
