"""A short load test at 30 % packet loss against our server: loss recovery must work.

One three-party room, 480p VP8, `loss-30` (30 % random loss and 100 ms RTT on
every participant's uplink and downlink), the browser-like client receiver
(NACK retries, decodability-aware frame buffer, playout delay). This checks
correctness, not timing: what the receivers could show, and for how long they
froze. Latency figures are for docs/BENCHMARKS.md, measured on a quiet machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # one load-test run of ~40 s serves every test here

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loss_30_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("loadtest")
    out = tmp / "loadtest.json"
    command = [
        sys.executable, "-m", "loadtest", "--server", "ours", "--profile", "loss-30", "--rooms", "1",
        "--duration", "8", "--warmup", "2", "--settle-timeout", "25",
        "--resolution", "480p", "--codec", "vp8", "--clip-seconds", "6", "--receiver", "browser",
        "--cache-dir", str(tmp / "clips"), "--json", str(out), "--no-progress",
        # one stream per publisher, with the uplink RED + ULPFEC these tests are about (the
        # load test's simulcast layers go out plain; test_simulcast_ci.py covers those)
        "--simulcast", "off",
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=170)
    assert out.exists(), f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    (run,) = json.loads(out.read_text())["runs"]
    assert "error" not in run, run
    return run


@pytest.mark.timeout(180)
def test_the_run_is_impaired_and_measured(loss_30_run):
    run = loss_30_run
    assert run["server"] == "ours" and run["profile"] == "loss-30"
    assert run["ready"]["video_pairs"] == 6
    # every peer's traffic really lost ~30 % in both directions
    for counters in run["impairment_counters"].values():
        for direction in ("uplink", "downlink"):
            assert 0.25 < counters[direction]["loss_ratio"] < 0.35, counters
    assert run["video_streams"] == 6 and run["probe_streams"] == 2 and run["audio_streams"] == 6
    for field in ("latency_ms", "transport_ms", "frames_delivered_ratio", "freeze_count", "frozen_ratio",
                  "first_frame_ms", "audio_in_time_ratio", "server_cpu_core_share", "server_rss_mb"):
        assert field in run, field
    assert run["server_cpu_core_share"] > 0 and run["server_rss_mb"] > 0
    assert run["parameters"]["receiver"] == "browser" and run["source"]["commit"]


@pytest.mark.timeout(180)
def test_the_server_recovers_from_30_percent_loss(loss_30_run):
    run = loss_30_run
    figures = (f"delivered {run['frames_delivered_ratio']}, longest freeze {run['longest_freeze_ms']} ms, "
               f"{run['freeze_count']} freezes, complete {run['frames_complete_ratio']}, "
               f"audio in time {run['audio_in_time_ratio']}")
    assert run["frames_delivered_ratio"] >= 0.90, figures
    assert run["longest_freeze_ms"] <= 1000, figures
    assert run["first_frame_ms"]["streams_without_frames"] == 0, figures


@pytest.mark.timeout(180)
def test_publishers_fec_is_decoded_at_the_server(loss_30_run):
    """The publishers send RED + ULPFEC as Chrome does; the server rebuilds uplink losses from it
    and tells lost FEC from lost media (its own counters, read over the admin API)."""
    uplink = loss_30_run["server_media"]["uplink_video"]
    assert uplink["publishers"] == 3 and loss_30_run["video_fec_uplink"]["publishers"] == 3, uplink
    assert uplink["fec_received"] > 100 and uplink["fec_rebuilt"] > 20, uplink
    assert uplink["nack_not_media"] > 0, uplink


@pytest.mark.timeout(180)
def test_the_servers_metrics_show_the_call_while_it_runs(loss_30_run):
    """/metrics, scraped at the window's end as Prometheus would: the call, its recovery, its joins."""
    metrics = loss_30_run["server_metrics"]
    assert "error" not in metrics, metrics
    s = metrics["samples"]
    assert s["consult_rooms_active"] == 1
    assert {role: s[f'consult_participants{{role="{role}"}}'] for role in ("patient", "doctor", "expert")} == \
        {"patient": 1, "doctor": 1, "expert": 1}
    assert s['consult_published_streams{kind="video"}'] == 3
    assert s['consult_forwarded_streams{kind="video",state="forwarding"}'] + \
        s['consult_forwarded_streams{kind="video",state="paused"}'] == 6
    for direction in ("uplink", "downlink"):
        assert s[f'consult_rtp_packets_total{{direction="{direction}",kind="video"}}'] > 1000
    # 30 % loss each way: the server asked publishers to resend, and resent to subscribers
    assert s['consult_nacked_packets_total{kind="video"}'] > 50
    assert s['consult_retransmissions_total{kind="video"}'] > 50
    assert s['consult_packet_loss_ratio_gcount{direction="downlink"}'] >= 6
    assert s['consult_join_seconds_count{stage="joined"}'] == 3
    assert s['consult_join_seconds_count{stage="connected"}'] == 3
    assert metrics["event_loop_lag_p99_ms"] is not None
