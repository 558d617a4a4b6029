"""Edits to the server's SDP offers that aiortc has no API for.

Audio resilience is negotiated here: Opus in-band FEC (the encoder hides a
lost 20 ms frame inside the next packet when it sees loss in our receiver
reports) and NACK for audio (browsers then retransmit Opus, and ask for it), so
audio survives heavy loss without a jitter buffer on the server.
"""

from __future__ import annotations

import re

OPUS_FMTP = {"minptime": "10", "useinbandfec": "1"}


def _opus_payload_types(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := re.match(r"a=rtpmap:(\d+) opus/48000", line, re.I))]


def enable_audio_resilience(sdp: str) -> str:
    """Opus with in-band FEC and audio NACK, on every Opus payload type of the offer."""
    lines = sdp.splitlines()
    for pt in _opus_payload_types(lines):
        fmtp_index = next((i for i, l in enumerate(lines) if l.startswith(f"a=fmtp:{pt} ")), None)
        params = dict(OPUS_FMTP)
        if fmtp_index is not None:
            for item in lines[fmtp_index].split(" ", 1)[1].split(";"):
                key, _, value = item.strip().partition("=")
                if key:
                    params.setdefault(key, value)
            params.update(OPUS_FMTP)
        fmtp = f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params.items())
        rtpmap_index = next(i for i, l in enumerate(lines) if l.startswith(f"a=rtpmap:{pt} "))
        if fmtp_index is None:
            lines.insert(rtpmap_index + 1, fmtp)
        else:
            lines[fmtp_index] = fmtp
        if f"a=rtcp-fb:{pt} nack" not in lines:
            lines.insert(rtpmap_index + 1, f"a=rtcp-fb:{pt} nack")
    return "\r\n".join(lines) + "\r\n"
