"""How fast one subscriber's media recovers after its link's rate steps (issue 14's step targets).

A link with `rate_steps` records when each step took effect (`Link.counters.as_dict()["steps"]`,
monotonic seconds, the clock every send and arrival is logged on). For each step into a
narrower rate, `delay_ok_after_s` is how long after the step the media toward that
subscriber stayed over DELAY_BOUND_S: the end of the last BIN_S bin (by send time, up
to the next step) whose 95th percentile is over the bound. Audio packets that never
arrived count as over; video frames count when they completed (a paused video sends no
frames, and freezes are measured elsewhere). For each step up, `top_layer_after_s` is
when every video toward the subscriber was first seen at its top layer (the server's
admin API, sampled; loadtest.layer_share), None if not before the next step or the end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

from loadtest.layer_share import Sample
from loadtest.metrics import SendLog, first_by_send, first_event_by_send

DELAY_BOUND_S = 0.25
BIN_S = 0.5
TOP_LAYER = "h"  # the offer's highest RID (media/sdp_simulcast.py)


def delay_ok_after(delays: Sequence[tuple[float, float]], start: float, end: float,
                   bound_s: float = DELAY_BOUND_S, bin_s: float = BIN_S) -> Optional[float]:
    """Seconds from `start` until the delays (send time, delay) stayed within the bound up to `end`.

    None when nothing was sent in [start, end); 0.0 when no bin went over.
    """
    bins: dict[int, list[float]] = {}
    for sent, delay in delays:
        if start <= sent < end:
            bins.setdefault(int((sent - start) / bin_s), []).append(delay)
    if not bins:
        return None
    over = [index for index, values in bins.items() if nearest_rank_p95(values) > bound_s]
    return round(min(end - start, (max(over) + 1) * bin_s), 2) if over else 0.0


def nearest_rank_p95(values: Sequence[float]) -> float:
    """The 95th percentile by nearest rank: no interpolation, so a lost packet's inf stays inf."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def top_layer_after(samples: Sequence[Sample], subscriber: str, start: float, end: float) -> Optional[float]:
    """Seconds from `start` to the first sample in [start, end) with every video to `subscriber` at the top."""
    for t, layers in samples:
        if not start <= t < end:
            continue
        mine = [layer for (_, sub, _), (layer, _) in layers.items() if sub == subscriber]
        if mine and all(layer == TOP_LAYER for layer in mine):
            return round(t - start, 2)
    return None


def subscriber_delays(record: dict[str, Any], subscriber: str) -> list[tuple[float, float]]:
    """(send time, delay) of the media toward `subscriber`: audio packets (inf if lost), completed video frames."""
    out: list[tuple[float, float]] = []
    for stream in record["streams"]:
        if stream["subscriber"] != subscriber:
            continue
        sends = record["sends"].get(stream["publisher"], {}).get(stream["kind"])
        if not sends:
            continue
        log = SendLog((i, t) for i, t in sends)
        if stream["kind"] == "audio":
            arrived = {s: e[1] for s, e in first_event_by_send(stream.get("arrivals", []), log).items()}
            out += [(s, arrived[s] - s if s in arrived else math.inf) for _, s in sends]
        else:
            out += [(s, t - s) for s, t in first_by_send(stream.get("complete", []), log).items()]
    return out


def step_recovery(record: dict[str, Any], layer_samples: Sequence[Sample] = ()) -> list[dict[str, Any]]:
    """Per downlink step of any subscriber: when, to what rate, and how fast its media recovered."""
    window_start, window_end = record["window"]["start"], record["window"]["end"]
    out = []
    for subscriber, links in sorted((record.get("impairment") or {}).items()):
        steps = ((links or {}).get("downlink") or {}).get("steps") or []
        if not steps:
            continue
        delays = subscriber_delays(record, subscriber)
        rate_before: Optional[float] = (links["downlink"].get("initial_kbps"))
        for index, (at, kbps) in enumerate(steps):
            until = steps[index + 1][0] if index + 1 < len(steps) else window_end
            narrower = kbps is not None and (rate_before is None or kbps < rate_before)
            row: dict[str, Any] = {"subscriber": subscriber, "at_s": round(at - window_start, 2), "kbps": kbps,
                                   "delay_ok_after_s": delay_ok_after(delays, at, until)}
            if not narrower:
                row["top_layer_after_s"] = top_layer_after(layer_samples, subscriber, at, until)
            out.append(row)
            rate_before = kbps
    return out
