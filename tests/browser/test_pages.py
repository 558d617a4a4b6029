"""The patient page and the doctor console, each in its own headless Chromium, see
each other's live camera through the SFU."""

from __future__ import annotations

import json
import time

import pytest

from .harness import connection_state, poll, remote_videos, start_sfu_server

MEDIA_TIMEOUT = 20.0  # from opening the pages until both show live remote video
FRAME_WINDOW = 2.0  # frames must advance over at least this long
MIN_NEW_FRAMES = 3


def wait_for_live_remote_video(pages: dict[str, tuple[object, str]], timeout: float = MEDIA_TIMEOUT,
                               window: float = FRAME_WINDOW) -> tuple[dict, dict]:
    """Poll every page until it is ``connected`` and one of its ``.remote-video``s of
    the expected role has a size and advances frames over ``window`` seconds.

    ``pages`` maps a label to (driver, role whose video that page must show).
    Returns (pages proven live -> evidence, last observation of every page).
    """
    deadline = time.monotonic() + timeout + window
    baselines: dict[tuple[str, str], tuple[float, dict]] = {}
    live: dict[str, dict] = {}
    last: dict[str, dict] = {}
    while len(live) < len(pages) and time.monotonic() < deadline:
        for label, (driver, role) in pages.items():
            if label in live:
                continue
            now = time.monotonic()
            try:
                state = connection_state(driver)
                videos = remote_videos(driver, role)
            except Exception as exc:  # page navigating, script error ...
                last[label] = {"error": repr(exc)}
                continue
            last[label] = {"connectionState": state, "remoteVideos": videos}
            if state != "connected":
                continue
            for v in videos:
                if not v["videoWidth"]:
                    continue
                key = (label, v["participantId"])
                if key not in baselines:
                    baselines[key] = (now, v)
                    continue
                t0, v0 = baselines[key]
                if now - t0 < window:
                    continue
                if v["frames"] is not None:
                    advanced = v["frames"] - v0["frames"] >= MIN_NEW_FRAMES
                else:
                    advanced = v["currentTime"] - v0["currentTime"] >= window / 2
                if advanced:
                    live[label] = {"before": v0, "after": v, "seconds": round(now - t0, 2)}
                    break
                # No progress over the window: restart the window from here.
                baselines[key] = (now, v)
        time.sleep(0.25)
    return live, last


def open_live_call(sfu_server, chromium, browser_diagnostics, prepare_doctor=None) -> tuple[object, object]:
    """A patient page and a doctor page that see each other's live video: (patient, doctor).
    `prepare_doctor(driver)` runs before the doctor's page loads (e.g. to edit its answers)."""
    patient = chromium("patient")
    doctor = chromium("doctor")
    if prepare_doctor is not None:
        prepare_doctor(doctor)
    patient.get(sfu_server.patient_url)
    doctor.get(sfu_server.doctor_url)
    live, _ = wait_for_live_remote_video({"patient": (patient, "doctor"), "doctor": (doctor, "patient")})
    if len(live) < 2:
        pytest.fail(browser_diagnostics("no live video between the pages"), pytrace=False)
    return patient, doctor


@pytest.mark.browser
def test_patient_and_doctor_see_each_others_live_video(sfu_server, chromium, browser_diagnostics):
    patient = chromium("patient")
    doctor = chromium("doctor")
    patient.get(sfu_server.patient_url)
    doctor.get(sfu_server.doctor_url)

    pages = {"patient": (patient, "doctor"), "doctor": (doctor, "patient")}
    live, last = wait_for_live_remote_video(pages)

    print(f"live remote video: {json.dumps(live, default=str)}")  # shown with -s
    missing = [label for label in pages if label not in live]
    if missing:
        details = "\n".join(
            f"{label} page (should show the {pages[label][1]}'s video), "
            f"last seen: {json.dumps(last.get(label), default=str)}"
            for label in missing)
        pytest.fail(browser_diagnostics(
            f"no live remote video within {MEDIA_TIMEOUT:.0f} s on: {', '.join(missing)}\n{details}"),
            pytrace=False)

    # Both still connected once media flows.
    states = {label: connection_state(driver) for label, (driver, _) in pages.items()}
    if any(s != "connected" for s in states.values()):
        pytest.fail(browser_diagnostics(f"connection state after media started: {states}"), pytrace=False)


VIEWER_MARK_JS = r"""
const canvas = document.querySelector('canvas.viewer-mark-layer');
const notice = document.getElementById('viewer-mark-notice');
if (!canvas || !canvas.dataset.label) return null;
const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let inked = 0;
for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked += 1;
return {label: canvas.dataset.label, at: canvas.dataset.at, inked,
        notice: notice && !notice.hidden ? notice.dataset.mode : null};
"""


@pytest.mark.browser
def test_page_watermark_draws_each_viewers_label_over_remote_video(netns, chromium, tmp_path):
    """live_watermark "page": each page draws its own viewer's name and the time over the remote video."""
    server = start_sfu_server(netns, tmp_path / "wm-data", extra_args=["--live-watermark", "page", "--processors", ""])
    patient = chromium("patient")
    doctor = chromium("doctor")
    patient.get(server.patient_url)
    doctor.get(server.doctor_url)
    pages = {"patient": (patient, "doctor"), "doctor": (doctor, "patient")}
    live, last = wait_for_live_remote_video(pages)
    assert set(live) == set(pages), f"no live remote video: {json.dumps(last, default=str)}\n{server.output()}"

    for driver, who in ((patient, "Patient (demo-patient)"), (doctor, "Doctor (demo-doctor)")):
        first = poll(lambda: driver.execute_script(VIEWER_MARK_JS), 10)
        assert first and first["label"].startswith(who) and first["label"].endswith(" UTC"), first
        assert first["inked"] > 200 and first["notice"] == "page", first
        time.sleep(2.0)
        later = driver.execute_script(VIEWER_MARK_JS)
        assert later["at"] != first["at"], "the label does not drift"
