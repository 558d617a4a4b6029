"""The patient page and the doctor console, each in its own headless Chromium, see
each other's live camera through the SFU."""

from __future__ import annotations

import json
import time

import pytest

from .harness import connection_state, remote_videos

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
            f"{label} page (should show the {pages[label][1]}'s video), last seen: {json.dumps(last.get(label), default=str)}"
            for label in missing)
        pytest.fail(browser_diagnostics(
            f"no live remote video within {MEDIA_TIMEOUT:.0f} s on: {', '.join(missing)}\n{details}"),
            pytrace=False)

    # Both still connected once media flows.
    states = {label: connection_state(driver) for label, (driver, _) in pages.items()}
    if any(s != "connected" for s in states.values()):
        pytest.fail(browser_diagnostics(f"connection state after media started: {states}"), pytrace=False)
