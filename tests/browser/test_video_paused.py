"""The notice over a remote tile while the server has paused that video to this page
alone (`video-state`, docs/PROTOCOL.md), on the patient page and on the console.

The server does not send `video-state` on its own here (that takes a downlink too weak
for the video), so the test hands the messages to each page's client as if they had
come over its WebSocket (`_receive`, what the socket's onmessage calls), in a real call.
"""

from __future__ import annotations

import json

import pytest

from .test_consultation_ui import phone_sized, screenshot, wait_ui

# One participant's tile, its paused notice and the client's state about it.
TILE_JS = r"""
const id = arguments[0];
const c = window.consultClient;
const tile = [...document.querySelectorAll('.tile')].find((t) => t.dataset.participantId === id);
if (!tile) return null;
const region = tile.querySelector('.tile-paused');
const notice = tile.querySelector('.tile-paused-notice');
const shown = notice.getClientRects().length > 0;
const video = tile.querySelector('video.remote-video');
const t = tile.getBoundingClientRect(), n = notice.getBoundingClientRect();
return {
  connection: document.body.dataset.connectionState,
  paused: tile.classList.contains('video-paused'),
  cameraOff: tile.classList.contains('camera-off'),
  notice: shown ? notice.innerText.trim() : null,
  regionText: region.textContent.trim(),
  role: region.getAttribute('role'), live: region.getAttribute('aria-live'),
  inside: shown ? n.left >= t.left && n.right <= t.right && n.top >= t.top && n.bottom <= t.bottom : null,
  dim: getComputedStyle(region).backgroundColor,
  frame: !!video && video.videoWidth > 0 && getComputedStyle(video).visibility === 'visible',
  pausedVideo: Object.fromEntries(c.pausedVideo),
  videoMid: [...c.slots].find(([, s]) => s.participant === id && s.kind === 'video')?.[0] ?? null,
  pausedTiles: document.querySelectorAll('.tile.video-paused').length,
};
"""

WEAK = "Video paused: weak connection\nAudio continues"


def tile(driver, participant_id: str) -> dict | None:
    return driver.execute_script(TILE_JS, participant_id)


def deliver(driver, msg: dict) -> None:
    """As if the server had sent ``msg``: parsed and queued like any signalling message."""
    driver.execute_script("const c = window.consultClient; c._receive(c._conn, arguments[0]);", json.dumps(msg))


def wait_tile(driver, participant_id: str, predicate, timeout: float = 10.0) -> tuple[bool, dict]:
    return wait_ui(driver, lambda d: tile(d, participant_id), predicate, timeout)


def check_page(driver, label: str, other_id: str, chromium, browser_diagnostics, tmp_path) -> None:
    """Pause, resume, ignore malformed messages, then free the slot of ``other_id``'s
    video on one page; the notice follows each step on that participant's tile."""
    ok, ui = wait_tile(driver, other_id, lambda s: s["connection"] == "connected" and s["frame"], timeout=20)
    assert ok, browser_diagnostics(f"{label}: no remote video to pause: {ui}")
    assert not ui["paused"] and ui["notice"] is None and ui["regionText"] == "" and ui["pausedVideo"] == {}, ui
    assert ui["role"] == "status" and ui["live"] == "polite", ui

    # Paused: the notice, over the dimmed last frame, inside the tile; unknown fields ignored.
    deliver(driver, {"type": "video-state", "participant": other_id, "paused": True,
                     "reason": "weak-connection", "future_field": {"x": 1}})
    ok, ui = wait_tile(driver, other_id, lambda s: s["notice"] is not None)
    assert ok, browser_diagnostics(f"{label}: no paused notice: {ui}")
    assert ui["notice"] == WEAK and ui["paused"] and ui["inside"] and ui["frame"], ui
    assert ui["pausedVideo"] == {other_id: "weak-connection"} and ui["pausedTiles"] == 1, ui
    assert ui["dim"] != "rgba(0, 0, 0, 0)", ui
    assert driver.execute_script("return document.documentElement.scrollWidth <= innerWidth"), "overflows"
    screenshot(driver, tmp_path / f"{label}-video-paused.png")

    # Resumed: gone, and the live region empty again.
    deliver(driver, {"type": "video-state", "participant": other_id, "paused": False})
    ok, ui = wait_tile(driver, other_id, lambda s: s["notice"] is None)
    assert ok, browser_diagnostics(f"{label}: the notice stayed after the resume: {ui}")
    assert not ui["paused"] and ui["regionText"] == "" and ui["pausedVideo"] == {}, ui

    # Malformed ones are ignored with a warning, without a reconnect; a reason this page
    # has no words for still gets the general notice.
    deliver(driver, {"type": "video-state", "paused": True, "reason": "weak-connection"})
    deliver(driver, {"type": "video-state", "participant": 42, "paused": True})
    deliver(driver, {"type": "video-state", "participant": other_id, "paused": True, "reason": "newer-reason"})
    ok, ui = wait_tile(driver, other_id, lambda s: s["notice"] is not None)
    assert ok, browser_diagnostics(f"{label}: no notice for an unknown reason: {ui}")
    assert ui["notice"] == "Video paused\nAudio continues" and ui["connection"] == "connected", ui
    assert ui["pausedVideo"] == {other_id: "newer-reason"}, ui
    warnings = [e["message"] for e in chromium.console_log(label) if "malformed video-state" in e["message"]]
    assert len(warnings) == 2, chromium.console_summary()

    # Its video slot freed (`tracks` with null): the notice cannot stick.
    deliver(driver, {"type": "video-state", "participant": other_id, "paused": True, "reason": "weak-connection"})
    ok, ui = wait_tile(driver, other_id, lambda s: s["notice"] == WEAK)
    assert ok and ui["videoMid"], browser_diagnostics(f"{label}: not paused again: {ui}")
    deliver(driver, {"type": "tracks", "tracks": {ui["videoMid"]: None}})
    ok, ui = wait_tile(driver, other_id, lambda s: s["cameraOff"] and s["pausedVideo"] == {})
    assert ok, browser_diagnostics(f"{label}: the paused state outlived the freed slot: {ui}")
    assert ui["notice"] is None and not ui["paused"] and ui["regionText"] == "", ui


@pytest.mark.browser
def test_paused_video_notice_on_patient_page_and_console(sfu_server, chromium, browser_diagnostics, tmp_path):
    doctor = chromium("doctor")
    doctor.get(sfu_server.doctor_url)
    patient = chromium("patient")
    phone_sized(patient)
    patient.get(sfu_server.patient_url)
    ids = {}
    for label, driver in (("doctor", doctor), ("patient", patient)):
        ok, ids[label] = wait_ui(driver, lambda d: d.execute_script("return window.consultClient.self?.id ?? null"),
                                 bool, timeout=20)
        assert ok, browser_diagnostics(f"the {label} never joined")

    # Screenshots of both pages while paused (the patient's at phone width) in tmp_path.
    check_page(patient, "patient", ids["doctor"], chromium, browser_diagnostics, tmp_path)
    check_page(doctor, "doctor", ids["patient"], chromium, browser_diagnostics, tmp_path)
