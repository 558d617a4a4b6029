"""Real Chromium pages: a layer no larger than the tile, and no layer that nobody takes.

The doctor waits alone: its camera's two larger simulcast layers are switched off
(`layers` message, `encodings[i].active`), as a phone in the waiting room would send
only its smallest. (The patient's video is analysed by the demo room's face processor,
which takes the best layer: its layers stay on.) The others join on large screens: the
layers come back and the patient, whose page draws the doctor large, gets 720p. The
console draws the expert small beside the patient: the doctor's page is sent the
expert's smallest layer (its `view` message said how small), until the doctor puts the
expert in the spotlight.
"""

from __future__ import annotations

import json
import time

import pytest

from .harness import LARGE_SCREEN, poll
from .test_pages import wait_for_live_remote_video
from .test_simulcast_layers import FULL_WIDTH, SETTLE_S, inbound_video

# What the patient's page sends of each layer of its camera: whether on, and bytes so far.
OUTBOUND_LAYERS_JS = r"""
const done = arguments[arguments.length - 1];
const c = window.consultClient;
(async () => {
  const out = {};
  const sender = c._conn.senders.video;
  for (const encoding of sender.getParameters().encodings) out[encoding.rid] = {active: encoding.active, bytes: 0};
  (await sender.getStats()).forEach((s) => {
    if (s.type === 'outbound-rtp' && s.rid in out) out[s.rid].bytes = s.bytesSent;
  });
  done(out);
})().catch((e) => done({error: String(e)}));
"""
QUIET_S = 3  # a layer switched off sends nothing over this long


def outbound_layers(driver) -> dict:
    result = driver.execute_async_script(OUTBOUND_LAYERS_JS)
    assert "error" not in result, result
    return result


@pytest.mark.browser
def test_layers_follow_tile_sizes_and_nobody_watching_turns_them_off(sfu_server, chromium, browser_diagnostics):
    server = sfu_server
    doctor = chromium("doctor")
    doctor.set_window_size(*LARGE_SCREEN)
    doctor.get(server.doctor_url)

    def publication(role: str) -> dict:
        ids = {p["role"]: p["id"] for p in server.admin_get("/api/rooms/demo/participants")["participants"]}
        participants = server.admin_get("/api/rooms/demo/media")["participants"]
        return participants[ids[role]]["published"].get("video") or {}

    # alone: only the smallest layer is asked for, and the page stops sending the others
    if not poll(lambda: publication("doctor").get("publisher_layers") == ["l"], timeout=30, interval=1.0):
        pytest.fail(browser_diagnostics(f"the doctor's larger layers were not turned off: {publication('doctor')}"),
                    pytrace=False)
    ok = poll(lambda: {rid: e["active"] for rid, e in outbound_layers(doctor).items()} ==
              {"h": False, "m": False, "l": True}, timeout=10)
    assert ok, outbound_layers(doctor)
    before = outbound_layers(doctor)
    time.sleep(QUIET_S)
    after = outbound_layers(doctor)
    assert after["h"]["bytes"] == before["h"]["bytes"] and after["m"]["bytes"] == before["m"]["bytes"], (before, after)
    assert after["l"]["bytes"] > before["l"]["bytes"], (before, after)

    # the others arrive on large screens: the layers come back, and the patient gets 720p
    expert = chromium("expert")
    expert.set_window_size(*LARGE_SCREEN)
    expert.get(server.expert_url)
    patient = chromium("patient")
    patient.set_window_size(*LARGE_SCREEN)
    patient.get(server.patient_url)
    arrived = time.monotonic()
    live, last = wait_for_live_remote_video({"doctor": (doctor, "expert"), "patient": (patient, "doctor")})
    assert len(live) == 2, browser_diagnostics(f"no live call: {last}")
    ids = {p["role"]: p["id"] for p in server.admin_get("/api/rooms/demo/participants")["participants"]}

    def sees_at(driver, role: str, width: int) -> bool:
        return inbound_video(driver).get(ids[role], {}).get("width") == width

    if not poll(lambda: sees_at(patient, "doctor", FULL_WIDTH), timeout=SETTLE_S, interval=1.0):
        pytest.fail(browser_diagnostics(f"the patient never got the doctor at {FULL_WIDTH}: {inbound_video(patient)}, "
                                        f"{publication('doctor')}, {outbound_layers(doctor)}"), pytrace=False)
    print(f"the patient saw the doctor at {FULL_WIDTH} {time.monotonic() - arrived:.1f} s after arriving")
    assert all(e["active"] for e in outbound_layers(doctor).values()), outbound_layers(doctor)

    # the console draws the expert small beside the patient: so is what the doctor is sent of it
    def expert_to_doctor() -> dict:
        receiving = server.admin_get("/api/rooms/demo/media")["participants"][ids["doctor"]]["receiving"]
        return receiving[f"{ids['expert']}:video"]

    if not poll(lambda: expert_to_doctor()["layer"] == "l" and sees_at(doctor, "expert", FULL_WIDTH // 4),
                timeout=20, interval=1.0):
        pytest.fail(browser_diagnostics(f"the expert's small tile was not sent a small layer: "
                                        f"{json.dumps(expert_to_doctor())}, {inbound_video(doctor)}"), pytrace=False)
    assert expert_to_doctor()["view"][0] <= 400, expert_to_doctor()

    # in the spotlight the expert's tile is large: the doctor's page gets the expert's 720p
    doctor.find_element("css selector", "#remote .tile[data-role=expert] .tile-pin").click()
    spotlit = time.monotonic()
    if not poll(lambda: sees_at(doctor, "expert", FULL_WIDTH), timeout=SETTLE_S, interval=1.0):
        pytest.fail(browser_diagnostics(f"the spotlit expert never came at {FULL_WIDTH}: "
                                        f"{json.dumps(expert_to_doctor())}, {inbound_video(doctor)}"), pytrace=False)
    print(f"the doctor saw the spotlit expert at {FULL_WIDTH} {time.monotonic() - spotlit:.1f} s after the click")
    assert expert_to_doctor()["view"][0] > 1000, expert_to_doctor()
