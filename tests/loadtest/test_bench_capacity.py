"""The capacity ramp: its limits and verdicts, the loop-lag arithmetic, and one real short run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.bench_capacity import Limits, WorkerProbe, saturation, summary, worker_ports
from loadtest.server_metrics import HistogramSnapshot, histogram

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRAPE = """\
# HELP consult_event_loop_lag_seconds How late the event loop ran a timer
# TYPE consult_event_loop_lag_seconds histogram
consult_event_loop_lag_seconds_bucket{le="0.001"} 8.0
consult_event_loop_lag_seconds_bucket{le="0.005"} 9.0
consult_event_loop_lag_seconds_bucket{le="0.05"} 10.0
consult_event_loop_lag_seconds_bucket{le="+Inf"} 10.0
consult_event_loop_lag_seconds_count 10.0
consult_event_loop_lag_seconds_sum 0.03
"""


def step(workers: int, rooms: int, delivered: float = 1.0, p95: float = 5.0, cpu: float = 0.01, **extra) -> dict:
    s = {"workers": workers, "rooms": rooms, "frames_delivered_ratio": delivered, "transport_p95_ms": p95,
         "server_cpu_per_video_stream": cpu, "client_cpu_core_share": 0.3, "machine_busy": 0.5, **extra}
    s["limits_broken"] = Limits().broken_by(s)
    s["saturated"] = saturation(s) if s["limits_broken"] else None
    return s


def test_a_step_breaks_the_limits_by_delivery_by_latency_or_by_failing():
    limits = Limits()
    assert limits.broken_by(step(1, 1)) == []
    assert limits.broken_by(step(1, 1, delivered=0.985)) == ["delivery 98.5 % < 99.0 %"]
    assert limits.broken_by(step(1, 1, p95=51.0)) == ["transport p95 51.0 ms > 50 ms"]
    assert limits.broken_by({"error": "boom"}) == ["the run failed: boom"]
    assert len(limits.broken_by(step(1, 1, delivered=None, p95=None))) == 2


def test_a_saturated_generator_or_machine_is_named_as_the_limit():
    assert saturation({"client_cpu_core_share": 0.95, "machine_busy": 0.5}).startswith("the load generator")
    assert saturation({"client_cpu_core_share": 0.5, "machine_busy": 0.97}).startswith("the machine")
    assert saturation({"client_cpu_core_share": 0.5, "machine_busy": 0.5}) is None


def test_loop_lag_over_a_window_is_the_difference_of_two_scrapes():
    end = histogram(SCRAPE, "consult_event_loop_lag_seconds")
    assert end is not None and end.count == 10
    start = HistogramSnapshot(((0.001, 4.0), (0.005, 4.0), (0.05, 4.0), (float("inf"), 4.0)), 0.002, 4.0)
    window = end.since(start)
    assert window.count == 6
    assert window.mean_ms() == pytest.approx(28 / 6, abs=0.01)
    # 4 of the 6 wake-ups within 1 ms, one within 5 ms, one within 50 ms: p99 at most 50 ms, p50 at most 1 ms
    assert window.quantile_ms(0.99) == 50.0
    assert window.quantile_ms(0.5) == 1.0
    assert histogram(SCRAPE, "consult_missing") is None


def test_workers_are_reached_on_their_own_ports():
    assert worker_ports(8000, 1) == {0: 8000}
    assert worker_ports(8000, 2) == {0: 8001, 1: 8002}


def test_the_summary_compares_per_stream_cost_where_both_kept_up_and_projects_per_core():
    steps = [step(1, 1, cpu=0.010), step(2, 1, cpu=0.011), step(1, 2, cpu=0.010), step(2, 2, cpu=0.0105),
             step(1, 3, delivered=0.9), step(2, 3, cpu=0.010)]
    out = summary(steps, [1, 2], Limits())
    assert out["by_workers"]["1"]["kept_up_to_rooms"] == 2
    assert out["by_workers"]["1"]["stopped_at"]["rooms"] == 3
    assert out["by_workers"]["2"]["kept_up_to_rooms"] == 3
    repeated = summary([*steps, step(1, 3)], [1, 2], Limits())  # one run at 3 rooms kept up, one did not
    assert repeated["by_workers"]["1"]["kept_up_to_rooms"] == 2
    assert out["by_workers"]["2"]["cpu_per_stream_vs_workers_1"] == pytest.approx(1.075)  # rooms 1 and 2 only
    assert out["by_workers"]["2"]["cpu_per_stream_vs_workers_1_by_rooms"] == {1: 1.1, 2: 1.05}
    assert out["projected_video_streams_per_core"] == 100
    assert out["projected_rooms_per_core"] == 17


def test_a_worker_that_does_not_answer_has_no_lag_figures():
    probe = WorkerProbe({0: 9}, admin_key=None)  # port 9 (discard): nothing listens on loopback
    probe.mark("window_start")
    probe.mark("window_end")
    assert probe.workers == [{"worker": 0, "cpu_share": None, "loop_lag_mean_ms": None, "loop_lag_p99_ms_at_most": None,
                              "loop_lag_samples": 0}]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_ramp_measures_both_workers_of_a_two_worker_server(tmp_path):
    out = tmp_path / "capacity.json"
    command = [sys.executable, "-m", "loadtest.bench_capacity", "--workers", "2", "--rooms", "1",
               "--duration", "3", "--warmup", "0.5", "--resolution", "480p", "--clip-seconds", "6",
               "--cache-dir", str(tmp_path / "clips"), "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(out.read_text())
    (only,) = report["steps"]
    assert "error" not in only, only
    assert only["frames_delivered_ratio"] > 0.5  # media flowed; the verdict itself is the bench's, not a test's
    detail = only["workers_detail"]
    assert [w["worker"] for w in detail] == [0, 1]
    assert sorted(w["rooms"] for w in detail) == [0, 1]  # the room lives on one worker
    assert all(w["loop_lag_samples"] > 0 and w["loop_lag_mean_ms"] is not None for w in detail)
    assert only["client_cpu_core_share"] > 0 and only["server_cpu_core_share"] > 0
    assert "| 2 | 1 | 6 |" in report["table_markdown"]
    assert report["summary"]["by_workers"]["2"]["stopped_at"] is None or only["limits_broken"]


def test_an_admin_key_beginning_with_a_dash_reaches_the_load_test():
    import argparse

    from loadtest.bench_capacity import load_test_args

    bench = argparse.Namespace(resolution="720p", duration=5.0, warmup=1.0, clip_seconds=10.0, cache_dir=None)
    args = load_test_args(2, "http://127.0.0.1:9", "-k3y_with-dash", 123, bench)
    assert (args.admin_key, args.rooms, args.server_pid, args.url) == ("-k3y_with-dash", 2, 123, "http://127.0.0.1:9")
