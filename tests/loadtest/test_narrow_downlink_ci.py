"""A short load test with the patient's downlink capped at 1 Mbit/s: the call must survive it.

One three-party room, 720p VP8 publishers (about 1.5 Mbit/s each once they have
ramped up), `patient-downlink-1m` (1 Mbit/s, 300 ms drop-tail queue, 60 ms RTT on
the patient's path only). Two such videos cannot both fit: the server has to pause
video toward the patient, keep the patient's audio in time, and stop recovery
traffic from multiplying the load (before downlink control: audio in time 11 %,
14 recovery packets per media packet). Correctness with wide margins, not the
benchmark figures (docs/BENCHMARKS.md).
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
def narrow_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("loadtest")
    out = tmp / "loadtest.json"
    command = [
        sys.executable, "-m", "loadtest", "--server", "ours", "--profile", "patient-downlink-1m", "--rooms", "1",
        "--duration", "20", "--warmup", "3", "--settle-timeout", "25", "--seed", "11",
        "--resolution", "720p", "--codec", "vp8", "--clip-seconds", "6", "--receiver", "browser",
        "--cache-dir", str(tmp / "clips"), "--json", str(out), "--no-progress",
    ]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=200)
    assert out.exists(), f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    (run,) = json.loads(out.read_text())["runs"]
    assert "error" not in run, run
    return run


def role_ids(run: dict) -> dict[str, str]:
    return {p["role"]: p["id"] for p in run["participants"]}


@pytest.mark.timeout(220)
def test_the_patients_audio_stays_in_time(narrow_run):
    patient = role_ids(narrow_run)["patient"]
    streams = [s for s in narrow_run["audio_streams_detail"] if s["subscriber"] == patient]
    assert len(streams) == 2
    for stream in streams:
        # 11-20 % before downlink control. After: 93-97 % over 40 s on a quiet machine, less in
        # this 20 s window: the call's first seconds (before any feedback) and each resume of a
        # video that then outgrows the link cost ~50-80 packets of the 1000 (81 % seen under CI load)
        assert stream["in_time_ratio"] >= 0.70, stream


@pytest.mark.timeout(220)
def test_video_toward_the_patient_stays_on_layers_that_fit_and_recovery_does_not_multiply(narrow_run):
    patient = role_ids(narrow_run)["patient"]
    room = next(iter(narrow_run["server_media"]["rooms"].values()))
    downlink = room[patient]["downlink"]
    # the publishers simulcast: the patient starts on their smallest layers and is raised only
    # as far as probes show room; two top layers (or one beside anything) do not fit
    assert downlink["probes"] >= 1, downlink
    media = recovery = 0
    for key, counters in room[patient]["receiving"].items():
        if key.endswith(":video"):
            assert counters["layer"] in ("l", "m"), (key, counters["layer"])
            media += counters["packets"]
            recovery += counters["retransmitted"] + counters["copies"] + counters["fec_packets"]
    assert media > 0
    assert recovery <= 0.5 * media, (recovery, media)


@pytest.mark.timeout(220)
def test_the_doctor_and_expert_are_not_affected(narrow_run):
    patient = role_ids(narrow_run)["patient"]
    others = [s for s in narrow_run["video_streams_detail"] if s["subscriber"] != patient]
    assert len(others) == 4
    for stream in others:
        assert stream["frames_delivered_ratio"] >= 0.95, stream
        assert stream["longest_freeze_s"] <= 1.0, stream
    room = next(iter(narrow_run["server_media"]["rooms"].values()))
    for pid, peer in room.items():
        if pid != patient:
            assert peer["downlink"]["pauses"] == 0, (pid, peer["downlink"])
