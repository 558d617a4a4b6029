"""The forwarding benchmark's machinery, briefly, against our server only (a correctness check, not timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path: Path, kind: str, *, settle_timeout: int, timeout: int) -> dict:
    """One room through `kind` for 3 s; the bench's JSON report."""
    out = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "loadtest.bench_forwarding",
        "--rooms", "1", "--kinds", kind, "--duration", "3", "--warmup", "0.5",
        "--settle-timeout", str(settle_timeout),
        # a small, quick clip: keyframes often, so every subscriber starts within half a second
        "--width", "320", "--height", "180", "--fps", "15", "--bitrate", "300000",
        "--clip-seconds", "2", "--keyframe-interval", "0.5",
        "--cache-dir", str(tmp_path / "clips"), "--json", str(out),
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(out.read_text())


@pytest.mark.timeout(90)
def test_benchmark_machinery_forwards_media_one_room(tmp_path):
    report = run_bench(tmp_path, "ours", settle_timeout=15, timeout=80)
    assert {"command", "machine", "settings", "runs", "comparison", "table_markdown"} <= report.keys()
    assert report["machine"]["nproc"] >= 1
    (run,) = report["runs"]
    assert "error" not in run, run
    assert run["kind"] == "ours" and run["rooms"] == 1
    assert run["ready"]["complete"], run["ready"]
    assert {"cpu_seconds", "wall_seconds", "cpu_share", "rss_mb", "peak_rss_mb"} <= run["server"].keys()
    assert run["server"]["cpu_seconds"] > 0 and run["server"]["rss_mb"] > 0
    assert {"cpu_share", "publisher_max_late_s", "sent"} <= run["client"].keys()
    assert {"busy_share_of_all_cores", "steal_share", "other_processes_cores"} <= run["machine"].keys()
    delivery = run["delivery"]
    for field in ("video_streams", "video_frames", "video_fps_per_stream", "video_kbps_per_stream",
                  "cpu_share_per_video_stream", "cpu_share_per_full_rate_stream"):
        assert field in delivery
    assert delivery["video_streams"] == 6

    # Every participant received video and audio from both others, through the server, in the window.
    streams = run["streams"]
    assert len(streams) == 6
    assert len({(s["subscriber"], s["publisher"]) for s in streams}) == 6
    for s in streams:
        assert s["subscriber"] != s["publisher"]
        assert s["video_frames"] >= 15, s  # ~45 expected in 3 s at 15 fps
        assert s["video_bytes"] > 0 and s["audio_frames"] >= 50, s
        assert s["video_size"] == "320x180", s
    assert delivery["video_streams_with_frames"] == 6

    row = report["comparison"][0]
    assert row["rooms"] == 1 and row["ours"]["cpu_share_per_video_stream"] > 0
    assert "| 1 | ours | 6 |" in report["table_markdown"]


@pytest.mark.timeout(120)
def test_benchmark_machinery_measures_two_workers(tmp_path):
    """`ours-workers2`: run.py --workers 2 with a redis-server of the bench's own; CPU over the
    whole process tree; the room's call on one worker, the other idle."""
    (run,) = run_bench(tmp_path, "ours-workers2", settle_timeout=20, timeout=110)["runs"]
    assert "error" not in run, run
    assert sorted(w["participants"] for w in run["workers"]) == [0, 3], run["workers"]
    assert run["server"]["cpu_seconds"] > 0 and run["delivery"]["video_streams_with_frames"] == 6
