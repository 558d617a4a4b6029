"""The analysis benchmark (python -m media.processors.bench) still runs and finds the face."""

from __future__ import annotations

from media.processors.bench import run_stream, synthetic_frames


def test_the_benchmark_runs_and_tracks_the_face_in_every_frame():
    frames = synthetic_frames(count=8)
    assert frames[0].shape == (480, 640, 3) and not (frames[0] == frames[2]).all()  # the face moves
    out: dict[str, list[float]] = {}
    run_stream(frames, n=10, warmup=2, out=out)
    assert out["found"] == [10] and len(out["detect"]) == len(out["metrics"]) == 10
