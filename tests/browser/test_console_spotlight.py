"""The console's spotlight (issue 17, item 7): with three in the call, the doctor shows the
patient's picture large with one press (the others in a row beneath), and back."""

from __future__ import annotations

import pytest

from .test_consultation_ui import wait_ui
from .test_pages import wait_for_live_remote_video

LAYOUT_JS = r"""
const grid = document.getElementById('remote').getBoundingClientRect();
const tiles = {};
for (const tile of document.querySelectorAll('#remote .tile')) {
  const r = tile.getBoundingClientRect();
  const pin = tile.querySelector('.tile-pin');
  tiles[tile.dataset.role] = {w: r.width / grid.width, h: r.height / grid.height,
                              pressed: pin ? pin.getAttribute('aria-pressed') : null,
                              pinShown: pin ? !pin.hidden : false};
}
return {tiles, spotlight: document.getElementById('remote').classList.contains('has-spotlight')};
"""


def layout(driver) -> dict:
    return driver.execute_script(LAYOUT_JS)


@pytest.mark.browser
def test_the_doctor_shows_the_patient_large_and_back(sfu_server, chromium, browser_diagnostics):
    doctor = chromium("doctor")
    doctor.set_window_size(1366, 768)
    doctor.get(sfu_server.doctor_url)
    patient = chromium("patient")
    patient.get(sfu_server.patient_url)
    expert = chromium("expert")
    expert.get(sfu_server.expert_url)
    live, last = wait_for_live_remote_video({"doctor": (doctor, "patient"), "patient": (patient, "doctor")})
    assert len(live) == 2, browser_diagnostics(f"no live call: {last}")
    ok, before = wait_ui(doctor, layout, lambda s: {"patient", "expert"} <= s["tiles"].keys(), timeout=20)
    assert ok, browser_diagnostics(f"the expert never appeared on the console: {before}")
    assert before["tiles"]["patient"]["pinShown"] and not before["spotlight"], before

    doctor.find_element("css selector", "#remote .tile[data-role=patient] .tile-pin").click()
    ok, large = wait_ui(doctor, layout, lambda s: s["spotlight"], timeout=5)
    assert ok, large
    patient_tile, expert_tile = large["tiles"]["patient"], large["tiles"]["expert"]
    assert patient_tile["pressed"] == "true" and patient_tile["w"] > 0.95 and patient_tile["h"] > 0.7, large
    assert expert_tile["h"] < 0.3 and patient_tile["h"] > before["tiles"]["patient"]["h"], (before, large)

    doctor.find_element("css selector", "#remote .tile[data-role=patient] .tile-pin").click()
    ok, back = wait_ui(doctor, layout, lambda s: not s["spotlight"], timeout=5)
    assert ok and back["tiles"]["patient"]["pressed"] == "false", back
    assert abs(back["tiles"]["patient"]["h"] - before["tiles"]["patient"]["h"]) < 0.05, (before, back)
