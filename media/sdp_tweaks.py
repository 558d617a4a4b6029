"""Edits to the server's SDP offers that aiortc has no API for.

Audio resilience is negotiated here: RED (RFC 2198: each packet repeats the
previous Opus frame), Opus in-band FEC (the encoder hides a low-bitrate copy of
the previous frame in each packet when our receiver reports show loss) and NACK
for audio (browsers then retransmit Opus, and ask for it), so audio survives
heavy loss without a jitter buffer on the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Optional

OPUS_FMTP = {"minptime": "10", "useinbandfec": "1"}


# A payload type number as SDP writes it: ASCII, at most 3 digits (RTP's are 0-127). Anything
# else in its place is not one (a longer run of digits would also exceed int()'s limit).
PAYLOAD_TYPE = r"[0-9]{1,3}"


def _opus_payload_types(lines: list[str]) -> list[str]:
    # the codec name is case-insensitive, the attribute is not: the edits look lines up by it
    return [m.group(1) for line in lines if (m := re.match(rf"a=rtpmap:({PAYLOAD_TYPE}) (?i:opus)/48000", line))]


def m_line_payload_types(m_line: str) -> set[int]:
    """The payload type numbers an m= line lists."""
    return {int(f) for f in m_line.split(" ")[3:] if re.fullmatch(PAYLOAD_TYPE, f)}


def split_sections(sdp: str) -> tuple[list[str], list[list[str]]]:
    """Session lines and each m-section's lines (CRLF or LF input; payload types are per section)."""
    session: list[str] = []
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        elif line:
            session.append(line)
    return session, sections


def join_sections(session: list[str], sections: list[list[str]]) -> str:
    return "\r\n".join(session + [line for section in sections for line in section]) + "\r\n"


def section_mid(section: list[str]) -> Optional[str]:
    return next((line[len("a=mid:"):].strip() for line in section if line.startswith("a=mid:")), None)


def _map_audio_sections(sdp: str, edit: Callable[[list[str]], list[str]]) -> str:
    """Apply `edit` to the lines of every audio m-section."""
    session, sections = split_sections(sdp)
    return join_sections(session, [edit(s) if s[0].startswith("m=audio") else s for s in sections])


def enable_audio_resilience(sdp: str) -> str:
    """Opus with in-band FEC and audio NACK, on every Opus payload type of the offer."""
    return _map_audio_sections(sdp, _resilient_section)


def _resilient_section(section: list[str]) -> list[str]:
    lines = list(section)
    for pt in _opus_payload_types(lines):
        fmtp_index = next((i for i, line in enumerate(lines) if line.startswith(f"a=fmtp:{pt} ")), None)
        params = dict(OPUS_FMTP)
        if fmtp_index is not None:
            for item in lines[fmtp_index].split(" ", 1)[1].split(";"):
                key, _, value = item.strip().partition("=")
                if key:
                    params.setdefault(key, value)
            params.update(OPUS_FMTP)
        fmtp = f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params.items())
        rtpmap_index = next(i for i, line in enumerate(lines) if line.startswith(f"a=rtpmap:{pt} "))
        if fmtp_index is None:
            lines.insert(rtpmap_index + 1, fmtp)
        else:
            lines[fmtp_index] = fmtp
        if f"a=rtcp-fb:{pt} nack" not in lines:
            lines.insert(rtpmap_index + 1, f"a=rtcp-fb:{pt} nack")
    return lines


# RFC 2198 redundancy for Opus. Chrome offers it as 63; any free dynamic type works.
RED_PREFERRED_PT = 63


def _free_payload_type(used: set[int]) -> int:
    for pt in [RED_PREFERRED_PT, *range(96, 128), *range(35, 63)]:
        if pt not in used:
            return pt
    raise ValueError("no free payload type for red")


def offer_audio_red(sdp: str) -> str:
    """List `red/48000/2` (Opus in Opus) first in every audio m-section that has Opus.

    First, because a browser answering this offer sends RED only when red leads
    its answer's codec list, and answers in the offer's order: every packet then
    also carries the previous Opus frame, so a packet lost on the uplink arrives
    20 ms later inside the next one instead of a round trip later.
    """
    return _map_audio_sections(sdp, _red_section)


def _red_section(section: list[str]) -> list[str]:
    opus = _opus_payload_types(section)
    if not opus or any(re.match(r"a=rtpmap:\d+ red/", line, re.I) for line in section):
        return section
    fields = section[0].split(" ")
    red = _free_payload_type(m_line_payload_types(section[0]))
    section = list(section)
    section[0] = " ".join(fields[:3] + [str(red)] + fields[3:])
    first_rtpmap = next(i for i, line in enumerate(section) if line.startswith("a=rtpmap:"))
    section[first_rtpmap:first_rtpmap] = [f"a=rtpmap:{red} red/48000/2", f"a=fmtp:{red} {opus[0]}/{opus[0]}"]
    return section


def answered_red_by_mid(sdp: str) -> dict[str, tuple[int, int]]:
    """mid -> (red payload type, Opus payload type) for each audio m-section listing red over Opus."""
    found: dict[str, tuple[int, int]] = {}
    for section in split_sections(sdp)[1]:
        mid = section_mid(section)
        red = red_for_opus(section) if section[0].startswith("m=audio") else None
        if mid is not None and red is not None:
            found[mid] = red
    return found


def red_for_opus(section: list[str]) -> tuple[int, int] | None:
    """(red payload type, Opus payload type) when this m-section lists red whose blocks are one Opus type."""
    opus = set(_opus_payload_types(section))
    for line in section:
        m = re.match(rf"a=rtpmap:({PAYLOAD_TYPE}) red/48000", line, re.I)
        if not m:
            continue
        pt = m.group(1)
        fmtp = next((line for line in section if line.startswith(f"a=fmtp:{pt} ")), None)
        blocks = fmtp.split(" ", 1)[1].strip().split("/") if fmtp else []
        if blocks and len(set(blocks)) == 1 and blocks[0] in opus:
            return int(pt), int(blocks[0])
    return None
