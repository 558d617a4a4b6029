"""Simulcast in the server's offers (RFC 8851 RIDs, RFC 8853 a=simulcast), which aiortc does not negotiate.

The server keeps offering: a publisher's receive-only video section asks for three
layers by RID, and a browser answering `a=simulcast:send` then sends each on its own
SSRC, named in the rtp-stream-id header extension of its packets (and its RTX in
repaired-rtp-stream-id). Chromium's answer sets no sizes or rates: the page sets them
per RID from `SIMULCAST_LADDER`, which the offer message carries (docs/PROTOCOL.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from .sdp_tweaks import join_sections, section_mid, split_sections

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
# Above aiortc's own (1-3) and below 15, the one-byte header's limit.
PREFERRED_EXTENSION_IDS = {RID_URI: 10, REPAIRED_RID_URI: 11}
RID = r"[A-Za-z0-9_-]{1,16}"


@dataclass(frozen=True)
class SimulcastLayer:
    rid: str
    scale_down: int  # the page's scaleResolutionDownBy
    max_bitrate: int  # bit/s, the page's maxBitrate

    def to_message(self) -> dict:
        return {"rid": self.rid, "scale_down": self.scale_down, "max_bitrate": self.max_bitrate}


# Highest first, as a=simulcast lists them and pages order their encodings. Rates as
# libwebrtc's defaults for 720p/360p/180p VP8 (the top one our bitrate policy's usual).
SIMULCAST_LADDER = (
    SimulcastLayer("h", 1, 1_500_000),
    SimulcastLayer("m", 2, 500_000),
    SimulcastLayer("l", 4, 150_000),
)


def offer_simulcast(sdp: str, ladder: tuple[SimulcastLayer, ...] = SIMULCAST_LADDER) -> str:
    """Ask for `ladder` in every receive-only video section (the publishers'), with the RID extensions."""
    session, sections = split_sections(sdp)
    return join_sections(session, [_simulcast_section(s, ladder) if _is_receive_only_video(s) else s
                                   for s in sections])


def _is_receive_only_video(section: list[str]) -> bool:
    return section[0].startswith("m=video") and "a=recvonly" in section


def _simulcast_section(section: list[str], ladder: tuple[SimulcastLayer, ...]) -> list[str]:
    if any(line.startswith(("a=simulcast:", "a=rid:")) for line in section):
        return section
    used = {int(m.group(1)) for line in section if (m := re.match(r"a=extmap:(\d+)", line))}
    extmaps = []
    for uri, preferred in PREFERRED_EXTENSION_IDS.items():
        if any(line.startswith("a=extmap:") and line.split(" ")[1:2] == [uri] for line in section):
            continue  # kept from an earlier edit (aiortc keeps extmaps, not RIDs)
        ext_id = next(i for i in [preferred, *range(4, 15)] if i not in used)
        used.add(ext_id)
        extmaps.append(f"a=extmap:{ext_id} {uri}")
    lines = list(section)
    last_extmap = max((i for i, line in enumerate(lines) if line.startswith("a=extmap:")), default=None)
    at = last_extmap + 1 if last_extmap is not None else len(lines)
    lines[at:at] = extmaps
    lines += [f"a=rid:{layer.rid} recv" for layer in ladder]
    lines.append("a=simulcast:recv " + ";".join(layer.rid for layer in ladder))
    return lines


def answered_simulcast(sdp: str) -> dict[str, tuple[str, ...]]:
    """mid -> the RIDs each video section of an answer sends as simulcast (in its order)."""
    found: dict[str, tuple[str, ...]] = {}
    for section in split_sections(sdp)[1]:
        mid = section_mid(section)
        if mid is None or not section[0].startswith("m=video"):
            continue
        send = next((line.split(" ", 1)[1].strip() for line in section
                     if line.startswith("a=simulcast:send ")), None)
        if send is None:
            continue
        offered = {m.group(1) for line in section if (m := re.fullmatch(rf"a=rid:({RID}) send.*", line))}
        # ';' separates streams, ',' alternatives of one (the first taken); '~' marks one paused
        rids = tuple(dict.fromkeys(
            alternative.split(",")[0].lstrip("~") for alternative in send.split(";")))
        rids = tuple(r for r in rids if r in offered)
        if rids:
            found[mid] = rids
    return found


def answered_layers(sdp: str, ladder: tuple[SimulcastLayer, ...] = SIMULCAST_LADDER) -> dict[str, tuple[str, ...]]:
    """mid -> the RIDs of `ladder` each video section of an answer sends, lowest layer first;
    RIDs the ladder does not have are ignored (a section left with none sends one stream)."""
    order = [layer.rid for layer in reversed(ladder)]
    found = {}
    for mid, rids in answered_simulcast(sdp).items():
        known = sorted((rid for rid in rids if rid in order), key=order.index)
        if known:
            found[mid] = tuple(known)
    return found


def rid_extensions(sdp: str, mid: str) -> list[RTCRtpHeaderExtensionParameters]:
    """The RID extensions a section of an answer agreed to, for parsing its packets."""
    for section in split_sections(sdp)[1]:
        if section_mid(section) != mid:
            continue
        found = []
        for line in section:
            m = re.fullmatch(r"a=extmap:(\d+)(?:/\w+)? (\S+).*", line)
            if m and m.group(2) in PREFERRED_EXTENSION_IDS and 0 < int(m.group(1)) < 15:
                found.append(RTCRtpHeaderExtensionParameters(id=int(m.group(1)), uri=m.group(2)))
        return found
    return []
