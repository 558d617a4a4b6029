"""A patient whose camera is blocked (issue 17, item 11): the page says so in the banner as
well as the notice, instead of a plain green "Connected", and tells a phone's user where
to allow it on their system."""

from __future__ import annotations

import pytest

from i18n import messages

from .test_consultation_ui import phone_sized, wait_ui

EN = messages("en")
ANDROID_UA = ("Mozilla/5.0 (Linux; Android 14; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/130.0.0.0 Mobile Safari/537.36")

STATE_JS = r"""
const notice = document.getElementById('media-notice');
return {connection: document.body.dataset.connectionState, media: document.body.dataset.media ?? null,
        banner: document.getElementById('banner').textContent,
        bannerColour: getComputedStyle(document.getElementById('banner')).backgroundColor,
        notice: notice.hidden ? null : document.getElementById('media-notice-text').textContent};
"""


@pytest.mark.browser
def test_a_blocked_camera_shows_in_the_banner_with_the_phones_steps(sfu_server, chromium, browser_diagnostics):
    doctor = chromium("doctor")
    doctor.get(sfu_server.doctor_url)
    # Chromium's own permission prompt, answered "Block" (the last value of the switch wins).
    patient = chromium("patient", extra_args=["--use-fake-ui-for-media-stream=deny", f"--user-agent={ANDROID_UA}"])
    phone_sized(patient)
    patient.get(sfu_server.patient_url)
    ok, state = wait_ui(patient, lambda d: d.execute_script(STATE_JS),
                        lambda s: s["connection"] == "connected" and s["notice"], timeout=30)
    assert ok, browser_diagnostics(f"no notice of the blocked camera: {state}")
    assert state["media"] == "problem" and state["banner"] == EN["state.connected_no_camera"], state
    assert EN["media.steps.android"] in state["notice"], state
    clean = doctor.execute_script(STATE_JS)
    assert clean["banner"] == EN["state.connected"] and clean["bannerColour"] != state["bannerColour"], (clean, state)
