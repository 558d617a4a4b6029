"""Real Chromium pages on a node that drains (several nodes, Redis): the call moves and the
pages rejoin by themselves.

The server runs with --redis-url (a redis-server the test starts in the server's
namespace). An admin call drains the node with no grace: the call is ended with reason
`moved`, and both pages, which re-join after it, come back with media flowing. With no
other node to take the room, the same node takes it again (someone has to). Then Redis
stops and the patient reloads: the join is refused as `unavailable`, which the page
retries until Redis is back.
"""

from __future__ import annotations

import shutil
import time

import pytest

from .harness import connection_state, poll, start_sfu_server
from .test_pages import wait_for_live_remote_video

REDIS_PORT = 6391


@pytest.mark.browser
def test_pages_rejoin_by_themselves_when_their_call_moves(netns, chromium, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: scripts/setup.sh --test installs it")
    redis_argv = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "yes", "--appendfsync", "always", "--dir", str(tmp_path)]

    def start_redis():
        process = netns.spawn("redis", redis_argv)
        assert poll(lambda: netns.run(["redis-cli", "-p", str(REDIS_PORT), "ping"]).stdout.strip() == "PONG",
                    timeout=10), "redis-server did not start"
        return process

    redis = start_redis()
    server = start_sfu_server(netns, tmp_path / "data", extra_args=[
        "--redis-url", f"redis://127.0.0.1:{REDIS_PORT}/0", "--workers", "1", "--processors", ""])

    def browser_diagnostics(summary: str) -> str:  # (the fixture of that name brings a server of its own)
        saved = chromium.save_diagnostics("failure")
        return f"{summary}\nsaved: {saved}\n{server.output()}"

    patient, doctor = chromium("patient"), chromium("doctor")
    patient.get(server.patient_url)
    doctor.get(server.doctor_url)
    pages = {"patient": (patient, "doctor"), "doctor": (doctor, "patient")}
    live, last = wait_for_live_remote_video(pages)
    assert len(live) == 2, browser_diagnostics(f"the call never got going: {last}")

    answer = server.admin_call("POST", "/api/node/drain", {"grace_s": 0})
    assert answer["draining"], answer
    drained = time.monotonic()
    # the pages saw the call end and are back in it, without anyone reloading them
    assert poll(lambda: server.admin_get("/api/node")["participants"] == 2 and all(
        connection_state(page) == "connected" for page in (patient, doctor)), timeout=30), \
        browser_diagnostics("the pages did not rejoin after their call moved")
    live, last = wait_for_live_remote_video(pages, timeout=30)
    assert len(live) == 2, browser_diagnostics(f"media did not come back after the move: {last}")
    print(f"both pages back with media {time.monotonic() - drained:.1f} s after the drain")

    redis.stop()
    patient.refresh()  # a join while Redis is down: `unavailable`, retried by the page
    assert poll(lambda: connection_state(patient) in ("connecting", "reconnecting"), timeout=15)
    time.sleep(3)  # a few refused tries
    state = connection_state(patient)  # refused for good, it would say "closed"
    assert state in ("connecting", "reconnecting"), browser_diagnostics(f"the page is {state!r}")
    start_redis()
    live, last = wait_for_live_remote_video(pages, timeout=40)
    assert len(live) == 2, browser_diagnostics(f"the patient did not get back in once Redis was: {last}")
