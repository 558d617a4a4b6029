"""The server's own /metrics, scraped while the load is on: what an operator's Prometheus
would have seen of the run (docs/DEPLOY.md, "Metrics").

Kept in the run's JSON as `server_metrics`: every consult_* sample by name and labels
(histogram buckets left out, their counts and sums kept), plus a few figures computed from
the histograms (event-loop lag, join time).
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Any, Optional

from prometheus_client.parser import text_string_to_metric_families

PREFIX = "consult_"


def scrape(base_url: str, admin_key: Optional[str], timeout: float = 5.0) -> str:
    request = urllib.request.Request(f"{base_url}/metrics")
    if admin_key:
        request.add_header("Authorization", f"Bearer {admin_key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def sample_key(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def summarize(text: str) -> dict[str, Any]:
    samples: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for s in family.samples:
            if s.name.endswith("_bucket"):
                labels = {k: v for k, v in s.labels.items() if k != "le"}
                buckets.setdefault(sample_key(s.name[:-len("_bucket")], labels), []).append(
                    (float(s.labels["le"]), s.value))
            elif not s.name.endswith("_created"):
                samples[sample_key(s.name, s.labels)] = s.value
    return {"samples": samples,
            "event_loop_lag_p99_ms": quantile_ms(buckets.get("consult_event_loop_lag_seconds"), 0.99),
            "join_joined_p95_ms": quantile_ms(buckets.get('consult_join_seconds{stage="joined"}'), 0.95),
            "join_connected_p95_ms": quantile_ms(buckets.get('consult_join_seconds{stage="connected"}'), 0.95)}


def quantile_ms(cumulative: Optional[list[tuple[float, float]]], q: float) -> Optional[float]:
    """The upper bound of the bucket the q-quantile falls in (no interpolation: an honest bound)."""
    if not cumulative:
        return None
    cumulative = sorted(cumulative)
    total = cumulative[-1][1]
    if total <= 0:
        return None
    for bound, count in cumulative:
        if count >= q * total:
            return None if bound == float("inf") else round(bound * 1000, 1)
    return None


def server_metrics(base_url: str, admin_key: Optional[str]) -> dict[str, Any]:
    """The summary, or why there is none (a server without /metrics, a refused key)."""
    try:
        return summarize(scrape(base_url, admin_key))
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


@dataclass(frozen=True)
class HistogramSnapshot:
    """One unlabelled histogram as scraped: cumulative bucket counts by upper bound, sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float

    def since(self, earlier: "HistogramSnapshot") -> "HistogramSnapshot":
        """What was observed between `earlier` and this scrape (the same process's histogram)."""
        before = dict(earlier.buckets)
        return HistogramSnapshot(tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets),
                                 self.sum - earlier.sum, self.count - earlier.count)

    def mean_ms(self) -> Optional[float]:
        return round(self.sum / self.count * 1000, 2) if self.count > 0 else None

    def quantile_ms(self, q: float) -> Optional[float]:
        return quantile_ms(list(self.buckets), q)


def histogram(text: str, name: str) -> Optional[HistogramSnapshot]:
    """The histogram `name` (without labels) from a /metrics text; None when it is not there."""
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        buckets, total, count = [], 0.0, 0.0
        for s in family.samples:
            if s.name == f"{name}_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == f"{name}_sum":
                total = s.value
            elif s.name == f"{name}_count":
                count = s.value
        return HistogramSnapshot(tuple(sorted(buckets)), total, count)
    return None
