"""How a quantity is spread across the streams or connections live now, as a gauge histogram.

Loss and RTT are states of each stream at a moment, not events: each scrape counts
how many streams sit in each bucket now (Prometheus GaugeHistogram; the text format
shows it as `_bucket` series with `le`, plus `_gcount` and `_gsum` gauges). Quantiles
come from `histogram_quantile(q, sum by (le) (name_bucket))`, with no rate(): the
buckets are not cumulative over time. Chosen over per-stream gauges (one series per
participant would be unbounded and identifying) and over a Summary (quantiles of
several servers cannot be added up; buckets can).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client.core import GaugeHistogramMetricFamily
from prometheus_client.utils import floatToGoString

LOSS_BUCKETS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
RTT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0)


def gauge_histogram(name: str, documentation: str, label: str, buckets: Sequence[float],
                    samples: Mapping[str, Iterable[float]]) -> GaugeHistogramMetricFamily:
    """One family: for each label value, its samples counted into `buckets` (upper bounds, ascending)."""
    family = GaugeHistogramMetricFamily(name, documentation, labels=[label])
    for value, values in samples.items():
        counts = [0] * (len(buckets) + 1)
        total = 0.0
        for sample in values:
            counts[bisect.bisect_left(buckets, sample)] += 1
            total += sample
        cumulative = 0
        rows: list[tuple[str, float]] = []
        for bound, count in zip((*buckets, float("inf")), counts):
            cumulative += count
            rows.append((floatToGoString(bound), cumulative))
        family.add_metric([value], rows, total)
    return family
