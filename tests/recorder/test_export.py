"""Export: a real recorded call becomes a WebM with the drawings burned in at their moments."""

from __future__ import annotations

import fractions
import os
import stat
import subprocess
import sys

import av
import numpy as np
import pytest

from recorder.audit import Action, AuditLog
from recorder.export import export_recording
from recorder.keys import KeyStore
from recorder.manifest import TrackInfo
from recorder.store import RecordingStore
from recorder.writer import RecordingWriter

from .conftest import ROOT

pytestmark = pytest.mark.slow  # real peers, servers or codecs for seconds

ARROW = {"kind": "arrow", "from": [0.1, 0.5], "to": [0.9, 0.5], "color": "#00ff00", "width": 12}


async def record_call_with_an_arrow(sfu) -> tuple[str, int]:
    await sfu.room()
    patient = await sfu.join("patient", seed=1)
    doctor = await sfu.join("doctor", seed=2)
    await doctor.wait_for_frames(patient.id, "video", 5)
    await doctor.send({"type": "record", "action": "start"})
    await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "on")
    await doctor.wait_for_frames(patient.id, "video", 30)
    await doctor.send({"type": "annotate", "op": "add", "shape": ARROW})
    drawn = await doctor.wait_for(lambda m: m["type"] == "annotation")
    await doctor.wait_for_frames(patient.id, "video", 30)
    await doctor.send({"type": "record", "action": "stop"})
    off = await doctor.wait_for(lambda m: m["type"] == "recording" and m["state"] == "off" and "recording_id" in m)
    return off["recording_id"], drawn["t_ms"]


def green_share_on_the_arrow(image: np.ndarray) -> float:
    """Fraction of pixels along the arrow's line that are bright green."""
    row = image[image.shape[0] // 2, image.shape[1] // 5: image.shape[1] * 4 // 5]
    return float(np.mean((row[:, 1] > 180) & (row[:, 0] < 120) & (row[:, 2] < 120)))


async def test_export_burns_in_the_drawing_from_its_moment_on(sfu, tmp_path):
    recording_id, _ = await record_call_with_an_arrow(sfu)
    data_dir = sfu.services.config.data_dir
    out = tmp_path / "consultation.webm"
    result = subprocess.run([sys.executable, "-m", "recorder", "export", recording_id, "--out", str(out),
                             "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "exported" in result.stdout

    with av.open(str(out)) as container:
        kinds = {s.type for s in container.streams}
        assert kinds == {"video", "audio"}
        video = container.streams.video[0]
        frames = [(f.time * 1000, f.to_ndarray(format="bgr24")) for f in container.decode(video)]
    assert len(frames) >= 50
    # before the arrow was drawn: no green line; well after: a green line across the frame
    early = [green_share_on_the_arrow(img) for t, img in frames[:10]]
    late = [green_share_on_the_arrow(img) for t, img in frames[-10:]]
    assert max(early) < 0.05 and min(late) > 0.5, (early, late)

    entries = [e for e in AuditLog.open(data_dir).authentic_entries() if e["target"] == recording_id]
    assert "export" in [e["action"] for e in entries]  # every export is audited


# -- who may read an export -------------------------------------------------------------------------

def record_real_vp8(data_dir, seconds: float = 2.0) -> str:
    """A short recording whose patient track holds real VP8 (a moving gradient, 320x180)."""
    keys = KeyStore.open(data_dir, environ={}, create=True)
    audit = AuditLog.open(data_dir, environ={}, create=True)
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"
    enc.time_base, enc.framerate, enc.gop_size = fractions.Fraction(1, 15), 15, 30
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    writer = RecordingWriter.start(data_dir, keys, room="r1", audit=audit, actor="doctor-1",
                                   tracks=[TrackInfo("patient-video", "video", "VP8", 90000)])
    writer.write_event(0, {"type": "track-owner", "participant": {"id": "patient", "name": "P", "role": "patient"}})
    ramp = np.tile(np.arange(320, dtype=np.uint8), (180, 1))
    for i in range(int(seconds * 15)):
        image = np.dstack([np.roll(ramp, 4 * i, axis=1)] * 3)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        for packet in enc.encode(frame):
            ms = int(packet.pts * 1000 / 15)
            writer.write_frame("patient-video", ms, ms * 90, packet.is_keyframe, bytes(packet))
    writer.close()
    return writer.id


def test_the_cli_writes_exports_only_its_user_can_read(tmp_path):
    data_dir = tmp_path / "data"
    recording_id = record_real_vp8(data_dir)
    out = tmp_path / "shared" / "consultation.webm"
    out.parent.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSULT_")}
    result = subprocess.run([sys.executable, "-m", "recorder", "export", recording_id, "--out", str(out),
                             "--data-dir", str(data_dir), "--viewer", "dr-wu"], cwd=ROOT, env=env,
                            preexec_fn=lambda: os.umask(0o022), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not list(out.parent.glob("*.partial"))


def test_an_export_replaces_a_readable_file_with_a_private_one(tmp_path):
    data_dir = tmp_path / "data"
    recording_id = record_real_vp8(data_dir, seconds=1.0)
    store = RecordingStore(data_dir, keys=KeyStore.open(data_dir, environ={}),
                           audit=AuditLog.open(data_dir, environ={}))
    out = tmp_path / "consultation.webm"
    out.write_bytes(b"an older export")
    out.chmod(0o644)
    stale = tmp_path / "consultation.webm.partial"  # left by an interrupted export
    stale.write_bytes(b"x")
    stale.chmod(0o666)
    old_umask = os.umask(0o022)  # this function must not depend on the caller's umask
    try:
        result = export_recording(store.open_reader(recording_id, actor="cli:ops", purpose=Action.EXPORT), out)
    finally:
        os.umask(old_umask)
    assert result.frames >= 10
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML
    assert not stale.exists()
