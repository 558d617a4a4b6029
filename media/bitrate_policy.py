"""What bitrate to ask a publisher for.

Without simulcast a publisher sends one stream to everybody, so the choice is
between serving the weakest subscriber (everyone gets its quality) and the
strongest (a weak subscriber suffers alone). A consultation must not lose the
doctor's view because the expert's hotel Wi-Fi is bad, so we follow the
strongest subscriber: the publisher is capped only when every subscriber is
constrained below what the uplink could carry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional


def publisher_bitrate(uplink_estimate: Optional[int], subscriber_estimates: Iterable[Optional[int]]) -> Optional[int]:
    """The REMB value for the publisher (None: nothing known yet, send nothing)."""
    estimates = list(subscriber_estimates)
    known = [e for e in estimates if e is not None]
    if estimates and len(known) == len(estimates):
        best_downlink = max(known)
        return best_downlink if uplink_estimate is None else min(uplink_estimate, best_downlink)
    return uplink_estimate
