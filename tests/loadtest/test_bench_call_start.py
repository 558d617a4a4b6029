"""The call-start benchmark's machinery, once and briefly (a correctness check, not timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.harness import missing_prerequisites

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_one_call_is_watched_and_each_page_sees_the_other(tmp_path):
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "loadtest.bench_call_start", "--runs", "1", "--seconds", "12",
               "--compare", f"again={REPO_ROOT / 'run.py'}", "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"this", "again"}
    for result in report["results"].values():
        (run,) = result["runs"]
        for role in ("doctor", "patient"):
            first = run[role]["first_frame_s"]
            assert first is not None and 0 < first < 12, run
            assert run[role]["width_640_s"] is None or run[role]["width_640_s"] >= first
        assert result["summary"]["doctor"]["first_frame_s"]["runs"] == [run["doctor"]["first_frame_s"]]
    assert "1280 from" in proc.stdout


def test_a_comparison_needs_an_existing_run_py():
    proc = subprocess.run([sys.executable, "-m", "loadtest.bench_call_start", "--compare", "x=/nonexistent/run.py"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and ("LABEL=RUN_PY" in proc.stderr or "cannot run" in proc.stderr), proc.stderr
