"""The patient's waiting room (issue 17, item 9): before the doctor joins, the clinic's name,
what the patient waits for, their own camera large and a microphone check that hears
Chromium's fake microphone; all of it goes when the doctor arrives."""

from __future__ import annotations

import json
import sys

import pytest

from i18n import messages

from .harness import REPO_ROOT
from .test_consultation_ui import phone_sized, screenshot, wait_ui

EN = messages("en")

WAITING_JS = r"""
const section = document.getElementById('waiting');
const shown = !section.hidden && section.getClientRects().length > 0;
const self = document.getElementById('self-view').getBoundingClientRect();
const text = [...section.children].filter((e) => !e.hidden).map((e) => e.getBoundingClientRect().bottom);
return {
  connection: document.body.dataset.connectionState,
  waiting: shown,
  clinic: shown && !document.getElementById('waiting-clinic').hidden
    ? document.getElementById('waiting-clinic').textContent : null,
  title: shown ? document.getElementById('waiting-title').textContent : null,
  level: Number(document.getElementById('mic-level').value),
  mic: document.getElementById('mic-status').dataset.state ?? null,
  selfShare: self.width / innerWidth,
  clearOfText: shown ? self.top >= Math.max(...text) : null,
  overflow: document.documentElement.scrollHeight > innerHeight || document.documentElement.scrollWidth > innerWidth,
};
"""

# Makes a room with a clinic name and a patient link for it, through the admin API.
ADMIN_PY = """
import json, sys, urllib.request
base, key = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
def call(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    return json.loads(opener.open(request, timeout=5).read())
call("/api/rooms", {"name": "Follow-up", "id": "wait-1", "clinic": "Riverside Skin Clinic", "processors": []})
links = {role: call("/api/rooms/wait-1/links", {"role": role})["url"] for role in ("patient", "doctor")}
print(json.dumps(links))
"""


@pytest.mark.browser
def test_the_patient_waits_with_a_camera_and_microphone_check(sfu_server, chromium, browser_diagnostics, tmp_path):
    key = (sfu_server.data_dir / "admin.key").read_text().strip()
    done = sfu_server.netns.run([sys.executable, "-c", ADMIN_PY, sfu_server.url("/").rstrip("/"), key],
                                check=True, cwd=REPO_ROOT)
    links = json.loads(done.stdout)
    patient = chromium("patient")
    phone_sized(patient)
    patient.get(links["patient"])
    ok, state = wait_ui(patient, lambda d: d.execute_script(WAITING_JS),
                        lambda s: s["waiting"] and s["mic"] == "heard", timeout=30)
    assert ok, browser_diagnostics(f"no waiting room, or the microphone was not heard: {state}")
    assert state["clinic"] == "Riverside Skin Clinic" and state["title"] == EN["stage.waiting_for_doctor"], state
    assert state["level"] > 0 and state["selfShare"] >= 0.3 and state["clearOfText"] and not state["overflow"], state
    screenshot(patient, tmp_path / "patient-waiting-room.png")

    doctor = chromium("doctor")
    doctor.get(links["doctor"])
    ok, state = wait_ui(patient, lambda d: d.execute_script(WAITING_JS), lambda s: not s["waiting"], timeout=30)
    assert ok, browser_diagnostics(f"the waiting room stayed after the doctor joined: {state}")
    assert state["selfShare"] < 0.3, state  # back in its corner, clear of the doctor

