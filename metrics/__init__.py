"""Prometheus metrics for consult-sfu: `/metrics` in the Prometheus text format.

The media plane never learns of Prometheus: it keeps plain counters that it already
needed (or one attribute more), and this package reads them when Prometheus scrapes.
Events that need a histogram (joins, recording segments) reach it through hooks the
signalling session and the recorder offer. Modules, one job each: service (one app's
Metrics), collector (media figures at scrape time), tally (counters that never fall),
spread (loss/RTT distributions), events (join and segment histograms), loop_lag,
log_errors, http (serving, the admin key). docs/DEPLOY.md ("Metrics") lists the series.
"""

from .http import METRICS_PATH, parse_address
from .service import Metrics

__all__ = ["METRICS_PATH", "Metrics", "parse_address"]
