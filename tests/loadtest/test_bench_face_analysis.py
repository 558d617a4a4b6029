"""The analysis benchmark (python -m loadtest.bench_face_analysis) still runs and finds the face."""

from __future__ import annotations

from loadtest.bench_face_analysis import run_stream
from loadtest.synthetic_video import portrait_frames


def test_the_benchmark_runs_and_tracks_the_face_in_every_frame():
    frames = portrait_frames(count=8)
    assert frames[0].shape == (480, 640, 3) and not (frames[0] == frames[2]).all()  # the face moves
    out: dict[str, list[float]] = {}
    run_stream(frames, n=10, warmup=2, out=out)
    assert out["found"] == [10] and len(out["detect"]) == len(out["metrics"]) == 10
