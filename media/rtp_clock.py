"""RTP/NTP time shared by both directions of the packet path: the abs-send-time stamp put
on every forwarded packet, and a publisher's sender report (NTP <-> RTP mapping) that the
down-tracks pass on for lip sync and the up-link reports answer."""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import clock


def abs_send_time_now() -> int:
    """The abs-send-time header extension value for now (6.18 fixed-point seconds)."""
    return (clock.current_ntp_time() >> 14) & 0x00FFFFFF


@dataclass(slots=True)
class SenderReport:
    """The publisher's latest NTP <-> RTP timestamp mapping, kept for lip sync."""

    ntp_timestamp: int
    rtp_timestamp: int
    received_at: float
