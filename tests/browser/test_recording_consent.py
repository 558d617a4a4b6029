"""Consent when a recording starts (issue 17): the patient is asked, by name of who records,
to continue or leave; the answer is audited under the patient's identity and shown on the
doctor's console; leaving ends the patient's call. The doctor, who started it, is not asked."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from recorder.audit import Action, AuditLog

from .harness import poll
from .test_consultation_ui import click, start_consultation, wait_ui

CONSENT_JS = r"""
const box = document.getElementById('consent');
const shown = box && !box.hidden && box.getClientRects().length > 0;
const r = shown ? box.getBoundingClientRect() : null;
return {
  connection: document.body.dataset.connectionState,
  asked: shown,
  recordingId: box ? box.dataset.recordingId : null,
  text: shown ? document.getElementById('consent-text').textContent : null,
  inView: r ? r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth : null,
  consents: [...document.querySelectorAll('.person-consent')].map((e) => [e.closest('.person').dataset.participantId,
                                                                          e.dataset.given]),
  ended: document.getElementById('ended')?.hidden === false ? document.getElementById('ended-text').textContent : null,
  recording: document.body.dataset.recording,
  toast: document.getElementById('toast')?.hidden === false ? document.getElementById('toast').textContent : null,
};
"""


def ui(driver) -> dict:
    return driver.execute_script(CONSENT_JS)


def send(driver, message: dict) -> None:
    driver.execute_script("window.consultClient._send(arguments[0]);", message)


def answers(server) -> list[tuple[str, bool]]:
    return [(e["actor"], e["details"]["given"]) for e in AuditLog.open(server.data_dir).authentic_entries()
            if e["action"] == Action.RECORD_CONSENT]


@pytest.mark.browser
def test_the_patient_is_asked_and_the_answer_is_audited(sfu_server, chromium, browser_diagnostics):
    patient, doctor = start_consultation(sfu_server, chromium, browser_diagnostics)
    assert not ui(patient)["asked"] and not ui(doctor)["asked"]
    doctor_name = doctor.execute_script("return window.consultClient.self.name")
    patient_id = patient.execute_script("return window.consultClient.self.id")

    send(doctor, {"type": "record", "action": "start"})
    ok, p = wait_ui(patient, ui, lambda s: s["asked"], timeout=15)
    assert ok, browser_diagnostics(f"the patient was not asked: {p}")
    assert doctor_name in p["text"] and p["inView"] and p["recordingId"], p
    assert not ui(doctor)["asked"]  # who started it is not asked
    click(patient, "#consent-continue")
    ok, p = wait_ui(patient, ui, lambda s: not s["asked"], timeout=5)
    assert ok and p["connection"] == "connected", p
    ok, d = wait_ui(doctor, ui, lambda s: [patient_id, "true"] in s["consents"], timeout=10)
    assert ok, browser_diagnostics(f"the console does not show the patient's answer: {d}")
    assert poll(lambda: answers(sfu_server) == [("demo-patient", True)], 10), answers(sfu_server)

    # Leave and "Join again" while it records: the strip, no "recording has stopped" toast,
    # and no second question about the same recording (issue 17, item 5).
    click(patient, "#leave")
    assert ui(patient)["ended"] is None  # the first tap only asks (issue 17, item 14)
    assert patient.find_element(By.CSS_SELECTOR, "#leave .control-label").text == "Tap again to leave"
    click(patient, "#leave")
    ok, p = wait_ui(patient, ui, lambda s: s["ended"] is not None, timeout=10)
    assert ok, p
    click(patient, "#rejoin")
    ok, p = wait_ui(patient, ui, lambda s: s["connection"] == "connected" and s["recording"] == "on", timeout=30)
    assert ok and p["toast"] is None and not p["asked"], browser_diagnostics(f"after Join again: {p}")

    # A reload does not ask again about the same recording.
    patient.refresh()
    ok, p = wait_ui(patient, ui, lambda s: s["connection"] == "connected", timeout=30)
    assert ok and not p["asked"], p

    # A new recording asks again; leaving is an answer, and ends the patient's call.
    send(doctor, {"type": "record", "action": "stop"})
    poll(lambda: doctor.execute_script("return window.consultClient.recording.state") == "off", 10)
    send(doctor, {"type": "record", "action": "start"})
    ok, p = wait_ui(patient, ui, lambda s: s["asked"], timeout=15)
    assert ok, browser_diagnostics(f"the patient was not asked about the second recording: {p}")
    click(patient, "#consent-leave")
    ok, p = wait_ui(patient, ui, lambda s: s["ended"] is not None, timeout=10)
    assert ok and p["connection"] == "closed", p
    assert poll(lambda: answers(sfu_server) == [("demo-patient", True), ("demo-patient", False)], 10), \
        answers(sfu_server)


@pytest.mark.browser
def test_a_room_that_records_no_one_before_they_agree_says_so(sfu_server, chromium, browser_diagnostics):
    """A room made with `consent_required`: the patient's question adds that nothing of them is
    recorded before they choose Continue (in the room's language too)."""
    server = sfu_server
    server.admin_call("POST", "/api/rooms", {"id": "held", "name": "Held", "consent_required": True,
                                             "processors": []})
    links = {role: server.admin_call("POST", "/api/rooms/held/links", {"role": role})["url"]
             for role in ("doctor", "patient")}
    doctor, patient = chromium("doctor"), chromium("patient")
    doctor.get(links["doctor"])
    patient.get(links["patient"])
    held_js = ("const e = document.getElementById('consent-held');"
               "return e && !e.hidden && e.getClientRects().length > 0 ? e.textContent : null;")
    ok, p = wait_ui(patient, ui, lambda s: s["connection"] == "connected", timeout=20)
    assert ok, browser_diagnostics(f"the patient did not connect: {p}")
    assert patient.execute_script(held_js) is None  # no recording yet: no question
    send(doctor, {"type": "record", "action": "start"})
    ok, p = wait_ui(patient, ui, lambda s: s["asked"], timeout=15)
    assert ok, browser_diagnostics(f"the patient was not asked: {p}")
    held = patient.execute_script(held_js)
    assert held and "Continue" in held, held
    click(patient, "#consent-continue")
    ok, p = wait_ui(patient, ui, lambda s: not s["asked"], timeout=5)
    assert ok and patient.execute_script(held_js) is None, p
