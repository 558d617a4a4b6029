"""The load-test publisher's answer to an offer asking for simulcast, written as Chrome writes it.

The server offers (media/sdp_simulcast.py): on the publisher's receive-only video
section, `a=rid:<rid> recv` per layer, `a=simulcast:recv h;m;l` and the rtp-stream-id and
repaired-rtp-stream-id extensions. Chrome answers that section with `a=rid:<rid> send`
for each, `a=simulcast:send` in the offer's order, the two extmaps under the offer's ids,
and no a=ssrc / a=ssrc-group lines: each layer's SSRC is announced by the RID in its
packets (tests/browser/test_simulcast_answer.py pins what Chromium answers).

aiortc neither negotiates nor keeps rid/simulcast: its parser drops those lines (it keeps
extmaps). So `add_simulcast_to_answer` is applied to the answer before
setLocalDescription and again to the local description that is sent (which aiortc
rebuilds with the ICE candidates); it is idempotent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from media.sdp_tweaks import join_sections, section_mid, split_sections

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
_RID = r"[A-Za-z0-9_-]{1,16}"  # RFC 8851 rid-syntax, as short as the extension carries


@dataclass(frozen=True)
class OfferedSimulcast:
    """What one video section of an offer asks for."""

    mid: str
    rids: tuple[str, ...]  # in a=simulcast:recv's order (highest first from our server)
    rid_extension: int
    repaired_rid_extension: Optional[int]


def _extmap_ids(section: list[str]) -> dict[str, int]:
    found = {}
    for line in section:
        m = re.fullmatch(r"a=extmap:(\d+)(?:/\w+)? (\S+).*", line.strip())
        if m:
            found[m.group(2)] = int(m.group(1))
    return found


def offered_simulcast(offer_sdp: str) -> dict[str, OfferedSimulcast]:
    """mid -> the layers each video section of the offer wants to receive (with the RID extension)."""
    found: dict[str, OfferedSimulcast] = {}
    for section in split_sections(offer_sdp)[1]:
        mid = section_mid(section)
        recv = next((line.split(" ", 1)[1].strip() for line in section if line.startswith("a=simulcast:recv ")), None)
        if mid is None or recv is None or not section[0].startswith("m=video"):
            continue
        declared = {m.group(1) for line in section if (m := re.fullmatch(rf"a=rid:({_RID}) recv.*", line.strip()))}
        # ';' separates streams, ',' alternatives of one (the first is taken), '~' marks one paused
        rids = tuple(r for r in dict.fromkeys(s.split(",")[0].lstrip("~") for s in recv.split(";")) if r in declared)
        extensions = _extmap_ids(section)
        if rids and RID_URI in extensions:
            found[mid] = OfferedSimulcast(mid, rids, extensions[RID_URI], extensions.get(REPAIRED_RID_URI))
    return found


def _is_ours(line: str) -> bool:
    """A line this edit writes (or that a simulcast answer must not have)."""
    return (line.startswith(("a=ssrc:", "a=ssrc-group:", "a=rid:", "a=simulcast:"))
            or bool(re.match(r"a=extmap:\d+(?:/\w+)? (" + re.escape(RID_URI) + "|" + re.escape(REPAIRED_RID_URI)
                             + r")(\s|$)", line)))


def add_simulcast_to_answer(answer_sdp: str, offered: OfferedSimulcast, rids: Optional[tuple[str, ...]] = None) -> str:
    """The answer with its `offered.mid` section sending `rids` (default: all offered) as simulcast.

    A rejected section (port 0) is left alone.
    """
    send = rids if rids is not None else offered.rids
    session, sections = split_sections(answer_sdp)
    edited = []
    for section in sections:
        fields = section[0].split()
        if section_mid(section) != offered.mid or len(fields) < 2 or fields[1] == "0":
            edited.append(section)
            continue
        lines = [line for line in section if not _is_ours(line)]
        extmaps = [f"a=extmap:{offered.rid_extension} {RID_URI}"]
        if offered.repaired_rid_extension is not None:
            extmaps.append(f"a=extmap:{offered.repaired_rid_extension} {REPAIRED_RID_URI}")
        last_extmap = max((i for i, line in enumerate(lines) if line.startswith("a=extmap:")), default=None)
        at = last_extmap + 1 if last_extmap is not None else next(
            (i for i, line in enumerate(lines) if line.startswith("a=mid:")), len(lines))
        lines[at:at] = extmaps
        lines += [f"a=rid:{rid} send" for rid in send] + ["a=simulcast:send " + ";".join(send)]
        edited.append(lines)
    return join_sections(session, edited)
