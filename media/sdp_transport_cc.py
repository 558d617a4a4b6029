"""Transport-wide congestion control (transport-cc) on the sections the server sends on.

aiortc does not negotiate it. The offer a subscriber receives gets the transport-wide
sequence number extension and `a=rtcp-fb:* transport-cc` on every send-only section;
a browser that keeps both in its answer then reports the arrival time of each packet we
send it (media/twcc_feedback.py), from which its downlink is estimated
(media/downlink_estimate.py). The publishing sections are left alone: a browser sending
transport-cc would wait for feedback on its uplink that the server does not give.
"""

from __future__ import annotations

import re
from typing import Optional

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from .rtp_writer import TRANSPORT_CC_URI
from .sdp_tweaks import join_sections, section_mid, split_sections

# One id across the bundle: every section's packets share the one sequence.
PREFERRED_EXTENSION_ID = 5
EXTMAP = re.compile(r"a=extmap:(\d+)(?:/\w+)? (\S+).*")
TRANSPORT_CC_FEEDBACK = re.compile(r"a=rtcp-fb:(\d{1,3}|\*) transport-cc\s*")


def transport_cc_id(section: list[str]) -> Optional[int]:
    """The id an m-section's extmap gives the transport-wide sequence number, if any."""
    return next((int(m.group(1)) for line in section
                 if (m := EXTMAP.fullmatch(line)) and m.group(2) == TRANSPORT_CC_URI), None)


def offer_transport_cc(sdp: str) -> str:
    """The offer with transport-cc on every send-only section (the subscriber's)."""
    session, sections = split_sections(sdp)
    used = {int(m.group(1)) for s in sections for line in s if (m := EXTMAP.fullmatch(line))}
    ext_id = next((i for s in sections if (i := transport_cc_id(s)) is not None), None)
    if ext_id is None:
        ext_id = next(i for i in [PREFERRED_EXTENSION_ID, *range(1, 15)] if i not in used)
    return join_sections(session, [_transport_cc_section(s, ext_id) if "a=sendonly" in s else s for s in sections])


def _transport_cc_section(section: list[str], ext_id: int) -> list[str]:
    lines = list(section)
    if transport_cc_id(lines) is None:
        last_extmap = max((i for i, line in enumerate(lines) if line.startswith("a=extmap:")), default=None)
        at = last_extmap + 1 if last_extmap is not None else len(lines)
        lines.insert(at, f"a=extmap:{ext_id} {TRANSPORT_CC_URI}")
    for pt in _payload_types(lines):
        feedback = f"a=rtcp-fb:{pt} transport-cc"
        if feedback not in lines:
            at = next(i for i, line in enumerate(lines) if line.startswith(f"a=rtpmap:{pt} "))
            lines.insert(at + 1, feedback)
    return lines


def _payload_types(section: list[str]) -> list[int]:
    """The media payload types of a section (not rtx, red or ulpfec: feedback is per transport)."""
    found = []
    for line in section:
        m = re.match(r"a=rtpmap:(\d{1,3}) ([\w-]+)/", line)
        if m and m.group(2).lower() not in ("rtx", "red", "ulpfec"):
            found.append(int(m.group(1)))
    return found


def answered_transport_cc(sdp: str) -> dict[str, int]:
    """mid -> the transport-cc extension id, for each section of an answer that kept the
    extension and transport-cc feedback."""
    found: dict[str, int] = {}
    for section in split_sections(sdp)[1]:
        mid = section_mid(section)
        ext_id = transport_cc_id(section)
        feedback = any(TRANSPORT_CC_FEEDBACK.fullmatch(line) for line in section)
        if mid is not None and ext_id is not None and 0 < ext_id < 15 and feedback:
            found[mid] = ext_id
    return found


def transport_cc_extension(ext_id: int) -> RTCRtpHeaderExtensionParameters:
    return RTCRtpHeaderExtensionParameters(id=ext_id, uri=TRANSPORT_CC_URI)
