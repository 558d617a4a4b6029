"""Loss and RTT spreads: each stream counted in the bucket of its value now, cumulative, as
Prometheus's histogram_quantile expects, and readable by its text parser."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics.spread import LOSS_BUCKETS, gauge_histogram


def test_values_fall_into_cumulative_buckets_with_inclusive_upper_bounds():
    family = gauge_histogram("consult_x_ratio", "x", "direction", (0.0, 0.1, 0.5),
                             {"uplink": [0.0, 0.0, 0.1, 0.3, 0.9], "downlink": []})
    rows = {(s.name, s.labels["direction"], s.labels.get("le")): s.value for s in family.samples}
    assert [rows[("consult_x_ratio_bucket", "uplink", le)] for le in ("0.0", "0.1", "0.5", "+Inf")] == [2, 3, 4, 5]
    assert rows[("consult_x_ratio_gcount", "uplink", None)] == 5
    assert abs(rows[("consult_x_ratio_gsum", "uplink", None)] - 1.3) < 1e-9
    assert [rows[("consult_x_ratio_bucket", "downlink", le)] for le in ("0.0", "0.1", "0.5", "+Inf")] == [0] * 4


def test_the_exposition_parses_as_a_histogram_with_its_count_and_sum():
    class One:
        def collect(self):
            yield gauge_histogram("consult_packet_loss_ratio", "loss", "direction", LOSS_BUCKETS,
                                  {"uplink": [0.02, 0.25]})

    registry = CollectorRegistry()
    registry.register(One())
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    buckets = {s.labels["le"]: s.value for s in families["consult_packet_loss_ratio"].samples}
    assert families["consult_packet_loss_ratio"].type == "histogram"
    assert buckets["0.01"] == 0 and buckets["0.02"] == 1 and buckets["0.3"] == 2 and buckets["+Inf"] == 2
    assert families["consult_packet_loss_ratio_gcount"].samples[0].value == 2
