"""docs/grafana-dashboard.json: valid, on a datasource variable, and naming only series /metrics
exports (and every family it exports shown somewhere)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from metrics import Metrics
from signalling.app import build_services
from signalling.config import ServerConfig

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum"),
            "gaugehistogram": ("_bucket", "_gcount", "_gsum")}


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _exported(tmp_path) -> dict[str, set[str]]:
    """family name -> the series names it exports."""
    services = build_services(ServerConfig(data_dir=tmp_path / "data", demo_room=False, default_processors=[]))
    registry = Metrics(services.rooms).registry
    return {family.name: {family.name + suffix for suffix in SUFFIXES[family.type]} for family in registry.collect()}


def test_the_dashboard_names_only_exported_series_and_shows_every_family(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported(tmp_path)
    series = set().union(*exported.values())
    expressions = [target["expr"] for panel in _panels(dashboard["panels"]) for target in panel.get("targets", [])]
    assert expressions
    named = {name for expr in expressions for name in re.findall(r"\bconsult_[a-z0-9_]+", expr)}
    assert named <= series, f"not exported: {sorted(named - series)}"
    shown = {family for family, names in exported.items() if names & named}
    assert shown == set(exported), f"not on the dashboard: {sorted(set(exported) - shown)}"


def test_every_panel_uses_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = []
    for panel in _panels(dashboard["panels"]):
        ids.append(panel["id"])
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]
    assert len(ids) == len(set(ids))
