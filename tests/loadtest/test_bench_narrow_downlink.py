"""The narrow-downlink benchmark: its figures from hand-made polls, and once briefly in Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import bench_narrow_downlink as bench
from tests.browser.harness import missing_prerequisites

REPO_ROOT = Path(__file__).resolve().parents[2]


def video(mid, role, frames, width=640, freezes=0, frozen_s=0.0):
    return {"mid": mid, "role": role, "frames": frames, "width": width, "freezes": freezes, "frozen_s": frozen_s}


def audio(mid, samples, concealed, jb_delay_s, jb_emitted):
    return {"mid": mid, "role": None, "samples": samples, "concealed": concealed, "jb_delay_s": jb_delay_s,
            "jb_emitted": jb_emitted}


def receiving(media, retransmitted, copies=0, fec=0):
    return {"doc:video": {"packets": media, "retransmitted": retransmitted, "copies": copies, "fec_packets": fec},
            "exp:video": {"packets": media, "retransmitted": 0, "copies": 0, "fec_packets": 0},
            "doc:audio": {"packets": 10_000, "retransmitted": 0, "copies": 0, "fec_packets": 0}}


def test_defaults_and_options():
    args = bench.parse_args([])
    assert (args.cap_kbit, args.queue_ms, args.warmup, args.seconds, args.runs) == (1000, 300, 10.0, 30.0, 2)
    assert args.compare == [] and args.json is None
    args = bench.parse_args(["--cap-kbit", "700", "--queue-ms", "100", "--warmup", "6", "--seconds", "6",
                             "--runs", "1", "--compare", "a=/x/run.py", "--compare", "b=/y/run.py",
                             "--json", "/tmp/out.json"])
    assert (args.cap_kbit, args.queue_ms, args.warmup, args.seconds, args.runs) == (700, 100, 6.0, 6.0, 1)
    assert args.compare == ["a=/x/run.py", "b=/y/run.py"] and args.json == Path("/tmp/out.json")
    assert bench.tc_cap(700, 100) == ("tbf", "rate", "700kbit", "burst", "16kb", "latency", "100ms")


@pytest.mark.parametrize("argv", [["--runs", "0"], ["--cap-kbit", "0"], ["--seconds", "-1"], ["--warmup", "-1"]])
def test_nonsense_options_are_refused(argv):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)


def test_the_longest_stall_is_the_longest_time_the_count_stood_still():
    moving = [(t * 0.5, 15 * t) for t in range(10)]
    assert bench.longest_stall(moving) == 0.0
    # stuck at 30 from t=1.0 to t=2.5, then again at 60 from 3.0 to the end (3.5)
    points = [(0.0, 0), (0.5, 15), (1.0, 30), (1.5, 30), (2.0, 30), (2.5, 30), (3.0, 60), (3.5, 60)]
    assert bench.longest_stall(points) == 1.5
    # absent polls do not advance it; before the stream appears it stands at 0
    assert bench.longest_stall([(0.0, None), (0.5, None), (1.0, 10), (1.5, None), (2.0, None), (2.5, None)]) == 1.5
    assert bench.longest_stall([(0.0, 5)]) == 0.0 and bench.longest_stall([]) == 0.0


def test_shares_count_absent_polls_as_below():
    assert bench.share_at_least([1280, 640, 320, None], 640) == 0.5
    assert bench.share_at_least([1280, 1280], 1280) == 1.0
    assert bench.share_at_least([], 640) is None


def test_video_figures_over_the_window():
    times = [10.0, 10.5, 11.0, 11.5, 12.0]
    series = [video("1", "doctor", 100, 640, 1, 0.5), video("1", "doctor", 110, 640, 1, 0.5),
              video("1", "doctor", 110, 320, 2, 0.9), None, video("1", "doctor", 140, 640, 2, 1.2)]
    figures = bench.video_figures(times, series, 640)
    assert figures == {"fps": 20.0, "frames": 40, "freezes": 1, "frozen_s": 0.7, "share_640": 0.6,
                       "longest_stall_s": 1.0, "polls": 5, "polls_present": 4}
    # a stream that appears in the middle counts from zero
    late = bench.video_figures(times, [None, None, video("3", "expert", 5), video("3", "expert", 20),
                                       video("3", "expert", 40)], 640)
    assert late["frames"] == 40 and late["fps"] == 20.0 and late["longest_stall_s"] == 0.5
    assert late["share_640"] == 0.6


def test_streams_are_named_by_whose_they_are_once_known():
    polls = [{"t": 1.0, "video": [video("1", None, 10), video("3", "expert", 5)]},
             {"t": 1.5, "video": [video("1", "doctor", 20), video("3", None, 9), video("5", None, 1)]}]
    series = bench.video_series(polls)
    assert list(series) == ["doctor", "expert", "mid 5"]
    assert [s["frames"] for s in series["doctor"]] == [10, 20]
    assert series["mid 5"] == [None, video("5", None, 1)]


def test_audio_concealed_share_and_jitter_buffer_delay():
    polls = [{"t": 10.0, "audio": [audio("0", 48_000, 100, 20.0, 480_000), audio("2", 48_000, 0, 10.0, 480_000)]},
             {"t": 20.0, "audio": [audio("0", 528_000, 4_900, 48_020.0, 960_000),
                                   audio("2", 528_000, 0, 48_010.0, 960_000)]}]
    figures = bench.audio_figures(polls)
    assert figures == {"samples": 960_000, "concealed_share": 0.005, "jitter_buffer_ms": 100.0}
    assert bench.audio_figures(polls[:1]) == {"samples": 0, "concealed_share": None, "jitter_buffer_ms": None}


def test_recovery_share_counts_video_recovery_of_every_kind_against_media():
    assert bench.video_packets(receiving(1000, 30, 10, 60)) == (2000, 100)
    start = {"receiving": receiving(1000, 30), "downlink": {"pauses": 0}}
    end = {"receiving": receiving(2000, 180, 20, 50),
           "downlink": {"pauses": 2, "resumes": 1, "layer_downs": 3, "layer_ups": 1, "probes": 4, "probes_failed": 1,
                        "estimate_kbps": 870, "transport_cc": {"feedback": 12}, "audio_kbps": 60}}
    figures = bench.server_figures(start, end)
    assert (figures["media_packets"], figures["recovery_packets"], figures["recovery_share"]) == (2000, 220, 0.11)
    assert figures["downlink"] == {k: end["downlink"][k] for k in bench.DOWNLINK_KEYS}
    assert bench.server_figures(None, end)["recovery_share"] is None


def hand_made_run():
    times = [10.0, 10.5, 11.0]
    patient = [{"t": t, "video": [video("1", "doctor", 15 * i, 640), video("3", "expert", 10, 320)],
                "audio": [audio("0", 48_000 * (i + 1), 10 * i, 0.1 * i, 4800 * i)]} for i, t in enumerate(times)]
    doctor = [{"t": t, "video": [video("1", "patient", 30 * i, 1280), video("3", "expert", 30 * i, 1280)],
               "audio": []} for i, t in enumerate(times)]
    expert = [{"t": t, "video": [video("1", "patient", 30 * i, 640 if i else 1280, freezes=i)], "audio": []}
              for i, t in enumerate(times)]
    return {"polls": {"patient": patient, "doctor": doctor, "expert": expert},
            "server": {"start": {"receiving": receiving(100, 0), "downlink": {}},
                       "end": {"receiving": receiving(200, 10), "downlink": {"pauses": 1, "estimate_kbps": 900}}}}


def test_a_run_is_derived_and_tabled():
    figures = bench.derive(hand_made_run())
    doctor_video = figures["patient"]["video"]["doctor"]
    assert doctor_video["fps"] == 30.0 and doctor_video["share_640"] == 1.0 and doctor_video["longest_stall_s"] == 0
    expert_video = figures["patient"]["video"]["expert"]
    assert expert_video["fps"] == 0 and expert_video["longest_stall_s"] == 1.0 and expert_video["share_640"] == 0
    assert figures["patient"]["audio"]["jitter_buffer_ms"] == round(1000 * 0.2 / 9600, 1)
    assert figures["doctor"]["from_patient"]["share_1280"] == 1.0
    assert figures["expert"]["from_patient"]["share_1280"] == round(1 / 3, 3)
    assert figures["expert"]["from_patient"]["freezes"] == 2
    assert figures["server"]["recovery_share"] == 0.05 and figures["server"]["downlink"]["pauses"] == 1

    values = bench.row_values(figures)
    headers = [h for h, _, _ in bench.COLUMNS]
    assert len(set(headers)) == len(headers)
    assert dict(zip(headers, values))["doc fps"] == 30.0


def test_what_the_patient_sends_and_why_the_browser_limits_it():
    polls = [{"outbound": [{"rid": "h", "width": 1280, "limit": "none"}, {"rid": "l", "width": 320, "limit": "none"}]},
             {"outbound": [{"rid": "h", "width": 960, "limit": "cpu"}]},
             {"outbound": [{"rid": "m", "width": 640, "limit": "bandwidth"}]},
             {}]
    assert bench.outbound_figures(polls, 1280) == {"share_1280": 0.25, "cpu_limited": 0.25, "bandwidth_limited": 0.25}
    assert bench.outbound_figures([], 1280)["cpu_limited"] is None


def test_medians_skip_missing_figures(capsys):
    assert bench.medians([[1, None, 3.0], [3, None, 5.0], [2, None, None]]) == [2, None, 4.0]
    run = hand_made_run()
    run["figures"] = bench.derive(run)
    runs = [run, {"error": "RuntimeError('no server')"}]
    results = {"this": {"run_py": "run.py", "runs": runs, "median": bench.summarise(runs)}}
    assert results["this"]["median"]["doc fps"] == 30.0
    bench.print_report(results)
    out = capsys.readouterr().out
    assert "failed: RuntimeError" in out and "median" in out and "on doc >=1280" in out
    assert bench.summarise([{"error": "x"}]) is None


def test_a_comparison_needs_an_existing_run_py(capsys):
    assert bench.main(["--compare", "x=/nonexistent/run.py"]) == 2
    assert "LABEL=RUN_PY" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(200)
def test_one_short_capped_call_is_measured(tmp_path):
    reason = missing_prerequisites()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "loadtest.bench_narrow_downlink", "--warmup", "6", "--seconds", "6",
               "--runs", "1", "--json", str(out)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert report["cap_kbit"] == 1000 and "machine" in report
    (run,) = report["results"]["this"]["runs"]
    figures = run["figures"]
    # the patient's page received video (cumulative count, warm-up included) and played audio in the window
    last_patient_poll = run["polls"]["patient"][-1]
    assert max((s["frames"] for s in last_patient_poll["video"]), default=0) > 0, last_patient_poll
    assert figures["patient"]["audio"]["samples"] > 0, figures["patient"]
    assert figures["patient"]["video"], figures["patient"]
    for stream in figures["patient"]["video"].values():
        assert {"fps", "freezes", "share_640", "longest_stall_s"} <= set(stream)
    assert figures["doctor"]["from_patient"] is not None and figures["expert"]["from_patient"] is not None
    assert figures["server"]["media_packets"] is not None and figures["server"]["downlink"]["pauses"] is not None
    assert set(report["results"]["this"]["median"]) == {h for h, _, _ in bench.COLUMNS}
    assert "doc stall s" in proc.stdout
