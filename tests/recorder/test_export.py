"""Export: a real recorded call becomes a WebM with the drawings burned in at their moments."""

from __future__ import annotations

import subprocess
import sys

import av
import numpy as np
import pytest

from recorder.audit import AuditLog

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
