"""The watermark registry's storage (its key) and the tracing command, end to end:
a real recording is exported with the viewer's marks, leaked (cropped, scaled,
re-encoded), and `python -m recorder trace` names the viewer; clean video is not
pinned on anyone."""

from __future__ import annotations

import fractions
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from loadtest.synthetic_video import decode, encode, moving_photo
from loadtest.watermark_leak import Attack, brightness_contrast, chain, crop, leak, scale
from recorder.audit import Action, AuditLog
from recorder.errors import KeyUnavailableError
from recorder.export import export_recording
from recorder.keys import KeyStore, encode_kek
from recorder.manifest import TrackInfo
from recorder.store import RecordingStore
from recorder.watermark_store import WATERMARK_KEY_ENV, export_hook, load_key
from recorder.writer import RecordingWriter
from watermark.registry import TRACE_ACTION

from .conftest import ROOT

FPS = 15


def run_trace(data_dir: Path, clip: Path, *args: str) -> subprocess.CompletedProcess:
    """The tracing command as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSULT_")}
    return subprocess.run([sys.executable, "-m", "recorder", "trace", "--data-dir", str(data_dir), str(clip), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


# -- the key --------------------------------------------------------------------------------------------------

def test_watermark_key(data_dir: Path, tmp_path: Path):
    with pytest.raises(KeyUnavailableError):
        load_key(data_dir, environ={})                           # never created by a reader
    key = load_key(data_dir, environ={}, create=True)
    path = data_dir / "watermark.key"
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_key(data_dir, environ={}, create=True) == key    # created once
    other = os.urandom(32)
    assert load_key(data_dir, environ={WATERMARK_KEY_ENV: encode_kek(other)}) == other


# -- export -> leak -> trace ------------------------------------------------------------------------------------

def _record_real_video(data_dir: Path, keys: KeyStore, audit: AuditLog, seconds: int = 10) -> str:
    """A recording whose patient track holds real VP8 frames (a moving photograph, 640x360)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 640, 360, "yuv420p"
    enc.time_base, enc.framerate, enc.bit_rate, enc.gop_size = fractions.Fraction(1, FPS), FPS, 1_200_000, 2 * FPS
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    writer = RecordingWriter.start(data_dir, keys, room="r1",
                                   tracks=[TrackInfo("patient-video", "video", "VP8", 90000)],
                                   audit=audit, actor="doctor-1")
    writer.write_event(0, {"type": "track-owner", "participant": {"id": "patient", "name": "P", "role": "patient"}})
    for i, image in enumerate(moving_photo(640, 360, seconds * FPS, seed=21, fps=FPS)):
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        for packet in enc.encode(frame):
            ms = int(packet.pts * 1000 / FPS)
            writer.write_frame("patient-video", ms, ms * 90, packet.is_keyframe, bytes(packet))
    writer.close()
    return writer.id


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> tuple[Path, KeyStore, AuditLog]:
    data_dir = tmp_path_factory.mktemp("wm") / "data"
    return data_dir, KeyStore.open(data_dir, environ={}, create=True), AuditLog.open(data_dir, environ={}, create=True)


@pytest.fixture(scope="module")
def exported(deployment, tmp_path_factory):
    """One 8 s recording of real VP8 video, exported once (export.py's libvpx encode is the slow part)."""
    data_dir, keys, audit = deployment
    tmp_path = tmp_path_factory.mktemp("export")
    recording_id = _record_real_video(data_dir, keys, audit, seconds=8)
    store = RecordingStore(data_dir, keys=keys, audit=audit)
    reader = store.open_reader(recording_id, actor="cli:ops", purpose=Action.EXPORT)
    issued, hook = export_hook(data_dir, recording_id=recording_id, viewer="expert-ana", viewer_name="Dr. Ana Müller",
                               actor="cli:ops", environ={})
    out = tmp_path / "consultation.webm"
    result = export_recording(reader, out, frame_hook=hook)
    assert result.frames >= 110
    return data_dir, issued, out


@pytest.mark.slow
def test_export_and_its_leaks_are_traced_to_the_viewer(exported, tmp_path: Path):
    data_dir, issued, out = exported
    result = run_trace(data_dir, out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"IDENTIFIED: watermark {issued.hex_id} issued to Dr. Ana Müller (expert-ana) for export" in result.stdout
    assert "confidence" in result.stdout

    # the leaker: crop 10 %, shrink to half, brighten, H.264 at 500 kbit/s in an MP4
    leaked = tmp_path / "leak.mp4"
    attack = Attack("leak", chain(crop(0.1), scale(0.5), brightness_contrast(0.9, 25)), "h264")
    leaked.write_bytes(leak(out.read_bytes(), 30, attack))
    result = run_trace(data_dir, leaked, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "identified" and doc["watermark_id"] == issued.hex_id
    assert doc["issued"]["viewer"] == "expert-ana" and doc["issued"]["purpose"] == "export"
    assert doc["false_match_probability"] < 1e-9 and doc["confidence"] > 0.999999999
    assert 1.08 < doc["scale"][0] < 1.14      # the period vs the clip's own size: 10 % of the picture cut away

    traces = [e for e in AuditLog.open(data_dir, environ={}).authentic_entries() if e["action"] == TRACE_ACTION]
    assert [t["details"]["verdict"] for t in traces][-2:] == ["identified", "identified"]


@pytest.mark.slow
def test_clean_video_is_pinned_on_no_one(exported, tmp_path: Path):
    data_dir = exported[0]
    clean = tmp_path / "clean.mp4"
    clean.write_bytes(encode(moving_photo(640, 360, 10 * FPS, seed=21, fps=FPS), "h264", 500_000, FPS))
    result = run_trace(data_dir, clean)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no watermark found" in result.stdout


def test_another_deployments_key_finds_nothing(exported, tmp_path: Path):
    out = exported[2]
    other = tmp_path / "other-data"
    load_key(other, environ={}, create=True)
    AuditLog.open(other, environ={}, create=True)
    result = run_trace(other, out)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no watermark found" in result.stdout


def test_trace_errors(data_dir: Path, tmp_path: Path, audit: AuditLog):
    load_key(data_dir, environ={}, create=True)
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert run_trace(data_dir, bad).returncode == 2
    assert run_trace(data_dir, tmp_path / "missing.mp4").returncode == 2
    assert run_trace(tmp_path / "no-such-data-dir", bad).returncode == 2   # no key: error, not "no watermark"


def test_a_single_screenshot_is_traced(exported, tmp_path: Path):
    """One frame of the export, saved as a JPEG at 60 % of its size: a leaked still."""
    import cv2

    data_dir, issued, out = exported
    frame = list(decode(out.read_bytes()))[40]
    still = tmp_path / "screenshot.jpg"
    cv2.imwrite(str(still), cv2.resize(frame, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    result = run_trace(data_dir, still)
    assert result.returncode == 0, result.stdout + result.stderr
    assert issued.hex_id in result.stdout
