"""After a network outage the patient page reconnects by itself and media resumes.

The outage is real: an nftables rule inside the test's namespace drops every UDP
datagram (all media) for longer than ICE tolerates, while the TCP signalling and
selenium's link to chromedriver stay up.
"""

from __future__ import annotations

import shutil

import pytest

from .harness import connection_state, poll
from .test_pages import open_live_call, wait_for_live_remote_video

OUTAGE_S = 12.0


@pytest.mark.browser
def test_patient_page_recovers_from_a_media_outage(sfu_server, netns, chromium, browser_diagnostics):
    if shutil.which("nft") is None:
        pytest.fail("nft is missing: scripts/setup.sh --test installs nftables")
    patient = chromium("patient")
    doctor = chromium("doctor")
    patient.get(sfu_server.patient_url)
    doctor.get(sfu_server.doctor_url)
    pages = {"patient": (patient, "doctor"), "doctor": (doctor, "patient")}
    live, _ = wait_for_live_remote_video(pages)
    assert len(live) == 2, browser_diagnostics("the call never got going")

    drop_udp = ["nft", "-f", "-"]
    rules = ("table inet csfu_outage {\n chain out {\n type filter hook output priority 0;\n"
             " meta l4proto udp drop\n }\n}\n")
    result = netns.run(drop_udp, input=rules)
    assert result.returncode == 0, result.stderr
    try:
        went_down = poll(lambda: connection_state(patient) == "reconnecting", timeout=OUTAGE_S)
    finally:
        netns.run(["nft", "delete", "table", "inet", "csfu_outage"])
    assert went_down, browser_diagnostics("the patient page never noticed the outage")

    recovered = poll(lambda: connection_state(patient) == "connected", timeout=40)
    assert recovered, browser_diagnostics("the patient page did not reconnect after the outage")
    live, last = wait_for_live_remote_video(pages, timeout=30)
    assert len(live) == 2, browser_diagnostics(f"media did not resume after reconnecting: {last}")
    # the doctor sees exactly one patient: the reconnect replaced the old session
    patients = doctor.execute_script(
        "return [...document.querySelectorAll('.remote-video[data-role=patient]')].length")
    assert patients == 1, browser_diagnostics(f"doctor shows {patients} patient tiles")


@pytest.mark.browser
def test_reloading_the_patient_page_rejoins_the_call(sfu_server, chromium, browser_diagnostics):
    """A reload is the first thing a patient tries: the tab kept its link, so the page rejoins
    (one patient for the doctor, not two, and no token back in the address bar)."""
    patient, doctor = open_live_call(sfu_server, chromium, browser_diagnostics)
    pages = {"patient": (patient, "doctor"), "doctor": (doctor, "patient")}
    assert "token" not in patient.current_url

    patient.refresh()
    rejoined = poll(lambda: connection_state(patient) == "connected", timeout=30)
    assert rejoined, browser_diagnostics("the reloaded patient page did not rejoin")
    live, last = wait_for_live_remote_video(pages, timeout=30)
    assert len(live) == 2, browser_diagnostics(f"media did not resume after the reload: {last}")
    assert "token" not in patient.current_url
    patients = poll(lambda: doctor.execute_script(
        "return [...document.querySelectorAll('.remote-video[data-role=patient]')].length") == 1, timeout=10)
    assert patients, browser_diagnostics("the doctor does not show exactly one patient after the reload")
