"""A real writer process killed with SIGKILL mid-recording."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from recorder.audit import Action, AuditLog
from recorder.keys import KeyStore
from recorder.reader import Event, RecordingReader
from recorder.store import RecordingStore
from recorder.writer import SEGMENT_MAX_BYTES, SEGMENT_MAX_MS

from . import synthetic
from .child import COUNTER, TRACK_IDS
from .conftest import ROOT, run_cli


def read_counters(path: Path) -> dict[str, tuple[int, int]]:
    data = path.read_bytes()
    return {t: COUNTER.unpack_from(data, i * COUNTER.size) for i, t in enumerate(TRACK_IDS)}


def expected_items(duration_ms: int) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for item in synthetic.session(duration_ms):
        if isinstance(item, synthetic.SynthFrame):
            out[item.track_id].append((item.timestamp_ms, item.rtp_timestamp, item.keyframe, item.payload))
        else:
            out["events"].append((item.timestamp_ms, item.data))
    return out


@pytest.mark.parametrize("target_segments", [5, 17, 40])
def test_sigkill_mid_recording_loses_at_most_the_last_segment(tmp_path, target_segments):
    data_dir, counters = tmp_path / "data", tmp_path / "counters"
    child = subprocess.Popen([sys.executable, "-m", "tests.recorder.child", "forever", str(data_dir), str(counters)],
                             cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if counters.exists() and counters.stat().st_size and \
                    min(sealed for t, (_, sealed) in read_counters(counters).items()
                        if t != "events") >= target_segments:
                break
            assert child.poll() is None, "writer exited early"
            time.sleep(0.001)
        else:
            pytest.fail("the writer made no progress")
        time.sleep(random.uniform(0, 0.02))  # land anywhere: mid-write, mid-fsync, between frames
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    progress = read_counters(counters)

    keys = KeyStore.open(data_dir, environ={})
    (rid,) = [p.name for p in (data_dir / "recordings").iterdir() if p.is_dir()]
    reader = RecordingReader.open(data_dir, rid, keys)
    report = reader.verify()
    assert report.status == "incomplete" and report.problems == [], report
    assert not report.live and not any(t.final for t in report.tracks)

    # Read everything back: every authenticated frame is exactly what the child wrote.
    got: dict[str, list] = defaultdict(list)
    for item in reader.items():
        if isinstance(item, Event):
            got["events"].append((item.timestamp_ms, item.data))
        else:
            got[item.track_id].append((item.timestamp_ms, item.rtp_timestamp, item.keyframe, item.payload))
    last_ts = max(max(ts for ts, *_ in frames) for frames in got.values())
    expected = expected_items(last_ts + 5000)
    segments = {t.track_id: t.segments for t in report.tracks}
    for track_id in TRACK_IDS:
        handed, sealed = progress[track_id]
        recovered = got[track_id]
        assert recovered == expected[track_id][:len(recovered)], track_id
        # Every segment the writer reported as written is there; at most one more (written, not yet reported).
        assert sealed <= segments[track_id] <= sealed + 1, (track_id, sealed, segments[track_id])
        # What is lost is only what had not yet been sealed: at most one segment's worth.
        assert len(recovered) <= handed + 1
        lost = expected[track_id][len(recovered):handed]
        if lost:
            if track_id == "events":
                size = sum(17 + len(str(data)) for _, data in lost)
            else:
                size = sum(17 + len(frame[3]) for frame in lost)
            assert size <= SEGMENT_MAX_BYTES + 70_000, (track_id, size)  # + the frame that filled it
            assert lost[-1][0] - lost[0][0] < SEGMENT_MAX_MS, (track_id, lost[0][0], lost[-1][0])

    # The operator's view: listed as open (no final segment), verify exits 3 (incomplete), nothing tampered.
    assert RecordingStore(data_dir).list()[0].state == "open"
    result = run_cli(data_dir, "verify", rid)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "status: incomplete" in result.stdout
    entries = list(AuditLog.open(data_dir, environ={}).authentic_entries())
    assert [e["action"] for e in entries if e["target"] == rid][0] == Action.RECORD_START
    assert Action.RECORD_STOP not in [e["action"] for e in entries]


def test_sigkill_inside_a_write_leaves_a_torn_tail_that_reads_as_incomplete(tmp_path):
    # With 8 MB segments, SIGKILL lands inside write() often enough to leave a partly written
    # segment on disk for real. Every run must read back as incomplete, never as tampered.
    torn = 0
    for run in range(40):
        data_dir = tmp_path / f"data{run}"
        child = subprocess.Popen([sys.executable, "-m", "tests.recorder.child", "forever-large", str(data_dir)],
                                 cwd=ROOT, stdout=subprocess.PIPE)
        try:
            assert child.stdout.readline() == b"recording\n"
            time.sleep(random.uniform(0.02, 0.2))
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            child.stdout.close()
            if child.poll() is None:
                child.kill()
        (rid,) = [p.name for p in (data_dir / "recordings").iterdir() if p.is_dir()]
        reader = RecordingReader.open(data_dir, rid, KeyStore.open(data_dir, environ={}))
        report = reader.verify()
        assert report.status == "incomplete" and not report.problems, report
        video = report.tracks[1]
        assert sum(1 for _ in reader.frames("v")) == video.segments
        torn += video.torn_bytes > 0
        if torn >= 2:
            break
    assert torn >= 1, "SIGKILL never landed inside a write; nothing torn to check"
