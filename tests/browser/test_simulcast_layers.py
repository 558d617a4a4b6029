"""Real Chromium pages publishing simulcast; the patient's downlink capped: it gets a smaller layer.

Every page's camera goes out as three layers (1280×720, 640×360, 320×180: the server's
offer asks for them by RID and the page sets their sizes and rates). The patient's page
runs in a namespace of its own behind a 700 kbit/s tbf cap on what the server sends it,
the doctor's and the expert's are uncapped. Two 720p videos (about 1.5 Mbit/s each) do
not fit the patient's link, two smaller layers do: the patient must see both videos
moving, at a smaller size, and hear them, while the doctor still receives the patient
at 720p. Without simulcast the same link could only pause one video or both.
"""

from __future__ import annotations

import json
import time

import pytest

from .harness import LARGE_SCREEN, poll
from .test_narrow_downlink import capped_patient_call, downlink_of
from .test_pages import wait_for_live_remote_video
from .test_video_fec import audio_totals

CAP = ("tbf", "rate", "700kbit", "burst", "16kb", "latency", "300ms")
FULL_WIDTH = 1280  # the harness's fake camera
SETTLE_S = 60  # Chromium's send estimate climbs to the top layer's rate in 15-30 s
# Above this a top layer does not fit the cap beside the other video's lowest layer and the audio.
TOP_LAYER_KBPS = 600

# Each remote video a page receives: whose, its decoded size and frames so far.
INBOUND_VIDEO_JS = r"""
const done = arguments[arguments.length - 1];
const c = window.consultClient;
(async () => {
  const out = {};
  const stats = await c._conn.pc.getStats();
  stats.forEach((s) => {
    if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
    const slot = c.slots.get(s.mid);
    if (slot) out[slot.participant] = {width: s.frameWidth ?? 0, frames: s.framesDecoded ?? 0};
  });
  done(out);
})().catch((e) => done({error: String(e)}));
"""


def inbound_video(driver) -> dict:
    result = driver.execute_async_script(INBOUND_VIDEO_JS)
    assert "error" not in result, result
    return result


@pytest.mark.browser
def test_a_patient_behind_a_narrow_downlink_gets_smaller_layers_while_the_doctor_keeps_720p(
        netns, patient_netns, chromium, tmp_path):
    server, patient_browsers, diagnostics = capped_patient_call(netns, patient_netns, chromium, tmp_path, CAP)

    try:
        patient = patient_browsers("patient")
        doctor = chromium("doctor")
        expert = chromium("expert")
        for clinician in (doctor, expert):
            clinician.set_window_size(*LARGE_SCREEN)  # the patient's picture drawn past 640 wide: 720p wanted
        doctor.get(server.doctor_url)
        expert.get(server.expert_url)
        patient.get(server.patient_url)
        pages = {"doctor": (doctor, "patient"), "expert": (expert, "patient"), "patient": (patient, "doctor")}
        live, _ = wait_for_live_remote_video(pages)
        if len(live) < 3:
            pytest.fail(diagnostics(f"video is not live on {sorted(set(pages) - set(live))}"), pytrace=False)
        ids = {p["role"]: p["id"] for p in server.admin_get("/api/rooms/demo/participants")["participants"]}

        # the doctor gets the patient's top layer once the patient's browser sends it
        def doctor_sees_720p() -> bool:
            return inbound_video(doctor).get(ids["patient"], {}).get("width") == FULL_WIDTH

        if not poll(doctor_sees_720p, timeout=SETTLE_S, interval=1.0):
            pytest.fail(diagnostics(f"the doctor never received the patient at {FULL_WIDTH}: "
                                    f"{inbound_video(doctor)}"), pytrace=False)

        # the top layers grow with the publishers' send estimates; once both are past what the
        # patient's link could take beside anything else, the patient must be on smaller ones
        def top_layer_kbps() -> dict:
            participants = server.admin_get("/api/rooms/demo/media")["participants"]
            return {role: (participants[ids[role]]["published"]["video"]["simulcast"]["h"] or {}).get("offered_kbps", 0)
                    for role in ("doctor", "expert")}

        if not poll(lambda: all(kbps >= TOP_LAYER_KBPS for kbps in top_layer_kbps().values()),
                    timeout=SETTLE_S, interval=1.0):
            participants = server.admin_get("/api/rooms/demo/media")["participants"]
            uplinks = {role: {k: v for k, v in participants[ids[role]].items() if k != "receiving"}
                       for role in ("doctor", "expert")}  # what the server saw of their send estimates
            pytest.fail(diagnostics(f"the top layers did not reach {TOP_LAYER_KBPS} kbit/s: {top_layer_kbps()}\n"
                                    f"publishers: {json.dumps(uplinks)}"),
                        pytrace=False)

        def patient_layers() -> dict:
            receiving = downlink_of(server, ids["patient"])["receiving"]
            return {role: receiving[f"{ids[role]}:video"]["layer"] for role in ("doctor", "expert")}

        if not poll(lambda: all(layer in ("l", "m") for layer in patient_layers().values()),
                    timeout=SETTLE_S, interval=1.0):
            pytest.fail(diagnostics(f"the patient's videos were not stepped down: {patient_layers()}"), pytrace=False)
        time.sleep(3)  # past the switch's keyframe

        # a window in which the patient's videos move, smaller, and its audio plays
        before, audio_before = inbound_video(patient), audio_totals(patient)
        time.sleep(10)
        after, audio_after = inbound_video(patient), audio_totals(patient)
        peer = downlink_of(server, ids["patient"])
        print(json.dumps({"before": before, "after": after, "audio": [audio_before, audio_after],
                          "downlink": peer["downlink"],
                          "layers": {k: (v["layer"], v["layer_switches"], v["paused"])
                                     for k, v in peer["receiving"].items() if k.endswith(":video")}},
                         indent=1))  # shown with -s
        print("\n".join(line for line in server.process.lines("stderr") if "downlink_control" in line))
        for role in ("doctor", "expert"):
            pid = ids[role]
            assert pid in after, (role, after)
            # frames advanced (at least a few a second) at a size below the camera's
            assert after[pid]["frames"] - before.get(pid, {}).get("frames", 0) >= 20, (role, before, after)
            assert 0 < after[pid]["width"] < FULL_WIDTH, (role, after)
            assert peer["receiving"][f"{pid}:video"]["layer"] in ("l", "m"), peer["receiving"]
        samples = audio_after["samples"] - audio_before["samples"]
        concealed = audio_after["concealed"] - audio_before["concealed"]
        assert samples > 48_000 * 10 * 0.5, (audio_before, audio_after)
        assert concealed <= 0.1 * samples, (audio_before, audio_after)
        # the doctor still receives the patient's top layer
        assert doctor_sees_720p(), inbound_video(doctor)
        assert downlink_of(server, ids["doctor"])["receiving"][f"{ids['patient']}:video"]["layer"] == "h"
    finally:
        patient_browsers.close()
