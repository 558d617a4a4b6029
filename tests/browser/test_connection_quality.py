"""The connection-quality word on a remote tile (issue 17, item 8): nothing while media
flows, "Connection lost" within about three seconds of the media stopping (and the banner
"Reconnecting" when nobody's media arrives), and gone again once it flows. The outage is
real: nftables in the test's namespace drops every UDP datagram (all media) for a few
seconds, shorter than ICE gives up after."""

from __future__ import annotations

import shutil
import time

import pytest

from i18n import messages

from .harness import poll
from .test_consultation_ui import start_consultation, wait_ui

OUTAGE_S = 5.0
NOTICED_WITHIN_S = 3.5  # 1.5 s of silence, judged twice a second, plus a margin for a busy machine

TILE_JS = r"""
const tile = [...document.querySelectorAll('#remote .tile')].find((t) => t.dataset.role === arguments[0]);
return tile ? {quality: tile.dataset.quality, text: tile.querySelector('.tile-quality').textContent,
               connection: document.body.dataset.connectionState,
               banner: document.getElementById('banner').textContent} : null;
"""

DROP_UDP = ("table inet csfu_quality {\n chain out {\n type filter hook output priority 0;\n"
            " meta l4proto udp drop\n }\n}\n")


def tile(driver, role: str) -> dict | None:
    return driver.execute_script(TILE_JS, role)


@pytest.mark.browser
def test_a_tile_says_when_its_media_stops_and_clears_when_it_flows(sfu_server, netns, chromium,
                                                                   browser_diagnostics):
    if shutil.which("nft") is None:
        pytest.fail("nft is missing: scripts/setup.sh --test installs nftables")
    patient, doctor = start_consultation(sfu_server, chromium, browser_diagnostics)
    ok, state = wait_ui(patient, lambda d: tile(d, "doctor"), lambda s: s["quality"] == "good", timeout=15)
    assert ok and state["text"] == "", browser_diagnostics(f"a clean call is not 'good': {state}")

    result = netns.run(["nft", "-f", "-"], input=DROP_UDP)
    assert result.returncode == 0, result.stderr
    dropped_at = time.monotonic()
    try:
        ok, state = wait_ui(patient, lambda d: tile(d, "doctor"), lambda s: s["quality"] == "lost",
                            timeout=OUTAGE_S, interval=0.1)
        noticed_after = time.monotonic() - dropped_at
        doctor_ok, doctor_saw = wait_ui(doctor, lambda d: tile(d, "patient"), lambda s: s["quality"] == "lost",
                                        timeout=max(0.5, OUTAGE_S - (time.monotonic() - dropped_at)), interval=0.1)
    finally:
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - dropped_at)))
        netns.run(["nft", "delete", "table", "inet", "csfu_quality"])
    assert ok, browser_diagnostics(f"the patient's page never said the doctor's media stopped: {state}")
    assert noticed_after <= NOTICED_WITHIN_S, noticed_after
    assert state["text"] == messages("en")["tile.quality.lost"], state
    # nobody's media arrives: the banner says so at once, not when ICE gives up seconds later
    assert state["banner"] == messages("en")["state.reconnecting"], state
    assert doctor_ok, browser_diagnostics(f"the doctor's console never said the patient's media stopped: {doctor_saw}")

    # Media flows again (ICE held on through the outage): the word goes by itself.
    ok, state = wait_ui(patient, lambda d: tile(d, "doctor"), lambda s: s["quality"] == "good", timeout=30)
    assert ok and state["text"] == "", browser_diagnostics(f"the tile still says {state} after the outage")
    assert state["banner"] == messages("en")["state.connected"], state
    assert poll(lambda: (tile(doctor, "patient") or {}).get("quality") == "good", 15), tile(doctor, "patient")
