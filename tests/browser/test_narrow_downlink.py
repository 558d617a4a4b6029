"""Real Chromium with the patient's downlink capped at 1 Mbit/s: audio first.

The patient's page runs in a namespace of its own, joined to the server's by a veth
pair whose server end is shaped by tbf (1 Mbit/s, 300 ms queue): everything the server
sends the patient, media and signalling, goes through that cap, as on a phone's mobile
link; the doctor's and the expert's pages stay uncapped. Two camera videos do not fit:
the server must pause video toward the patient (and tell its page), keep the patient's
audio playing, keep recovery traffic from multiplying the load, and leave the doctor
and the expert with the patient's video. Before downlink control, in the same setup,
recovery traffic toward the patient was 6-9 times its media and its audio jitter
buffer grew to 220-435 ms.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from .harness import (
    BrowserFactory,
    NetNamespace,
    SfuServer,
    link_namespaces,
    poll,
    start_sfu_server,
    start_tcp_forwarder,
)
from .test_pages import wait_for_live_remote_video
from .test_video_fec import audio_totals

PORT = 8080
CAP = ("tbf", "rate", "400kbit", "burst", "16kb", "latency", "300ms")
WINDOW_S = 25

PAUSED_TILES_JS = "return [...document.querySelectorAll('.tile.video-paused .tile-paused-title')]" \
                  ".map(e => e.textContent);"


def downlink_of(server, participant_id: str) -> dict:
    return server.admin_get("/api/rooms/demo/media")["participants"][participant_id]


def video_counters(peer: dict) -> tuple[int, int]:
    """(media packets, recovery packets) sent to a participant's video down-tracks."""
    media = recovery = 0
    for key, counters in peer["receiving"].items():
        if key.endswith(":video"):
            media += counters["packets"]
            recovery += counters["retransmitted"] + counters["copies"] + counters["fec_packets"]
    return media, recovery


def capped_patient_call(netns: NetNamespace, patient_netns: NetNamespace, chromium: BrowserFactory, tmp_path,
                        cap: tuple[str, ...]) -> tuple[SfuServer, BrowserFactory, Callable[[str], str]]:
    """The server in `netns`; the patient's browsers in `patient_netns`, everything the server
    sends them shaped by `cap` (a tc qdisc) on its end of the link. Returns the server, the
    patient's browser factory (close it) and a failure message maker with every page's state."""
    server = start_sfu_server(netns, tmp_path / "data",
                              extra_args=["--host", "0.0.0.0", "--public-url", f"http://127.0.0.1:{PORT}"])
    link = link_namespaces(netns, patient_netns)
    start_tcp_forwarder(patient_netns, PORT, link.a_address, PORT)
    netns.run(["tc", "qdisc", "add", "dev", link.a_veth, "root", *cap], check=True)
    patient_browsers = BrowserFactory(patient_netns, artifact_dir=tmp_path / "patient")

    def diagnostics(summary: str) -> str:
        saved = chromium.save_diagnostics("failure") + patient_browsers.save_diagnostics("failure")
        return (f"{summary}\nsaved: {[str(p) for p in saved]}\n{chromium.console_summary()}\n"
                f"{patient_browsers.console_summary()}\n--- server ---\n{server.output()[-6000:]}")

    return server, patient_browsers, diagnostics


@pytest.mark.browser
def test_a_patient_behind_a_narrow_downlink_keeps_its_audio(netns, patient_netns, chromium, tmp_path):
    server, patient_browsers, diagnostics = capped_patient_call(netns, patient_netns, chromium, tmp_path, CAP)

    try:
        patient = patient_browsers("patient")
        doctor = chromium("doctor")
        expert = chromium("expert")
        doctor.get(server.doctor_url)
        expert.get(server.expert_url)
        patient.get(server.patient_url)
        others = {"doctor": (doctor, "patient"), "expert": (expert, "patient")}
        live, _ = wait_for_live_remote_video(others)
        if len(live) < 2:
            pytest.fail(diagnostics(f"the patient's video is not live on {sorted(set(others) - set(live))}"),
                        pytrace=False)
        ids = {p["role"]: p["id"] for p in server.admin_get("/api/rooms/demo/participants")["participants"]}
        assert poll(lambda: audio_totals(patient)["samples"] > 0, timeout=30), "the patient hears nothing"

        audio_before = audio_totals(patient)
        media_before, recovery_before = video_counters(downlink_of(server, ids["patient"]))
        notices: set[str] = set()
        deadline = time.monotonic() + WINDOW_S
        while time.monotonic() < deadline:
            notices.update(patient.execute_script(PAUSED_TILES_JS) or [])
            time.sleep(0.5)
        audio_after = audio_totals(patient)
        peer = downlink_of(server, ids["patient"])
        media_after, recovery_after = video_counters(peer)
        print(json.dumps({"audio": [audio_before, audio_after], "downlink": peer["downlink"],
                          "receiving": peer["receiving"], "notices": sorted(notices)}, indent=1))  # shown with -s

        # video toward the patient was paused, and its page said so
        assert peer["downlink"]["pauses"] >= 1, peer["downlink"]
        assert "Video paused: weak connection" in notices, notices
        # the patient's audio went on: what it received over the window was mostly played, not concealed
        samples = audio_after["samples"] - audio_before["samples"]
        concealed = audio_after["concealed"] - audio_before["concealed"]
        assert samples > 48_000 * WINDOW_S * 0.5, (audio_before, audio_after)
        assert concealed <= 0.2 * samples, (audio_before, audio_after)
        # recovery no longer multiplies the load
        media, recovery = media_after - media_before, recovery_after - recovery_before
        assert recovery <= media + 50, (media, recovery)
        # the doctor and the expert still see the patient
        live, _ = wait_for_live_remote_video(others, timeout=10)
        assert len(live) == 2, diagnostics(f"the patient's video stopped on {sorted(set(others) - set(live))}")
        for role in ("doctor", "expert"):
            assert downlink_of(server, ids[role])["downlink"]["pauses"] == 0
    finally:
        patient_browsers.close()
