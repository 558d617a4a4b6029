"""Replay in a real browser: a patient and a doctor (two headless Chromiums) are recorded
through the real server for a few seconds while the doctor draws and undoes a stroke;
then a trainer opens /trainer with a trainer link and replays it. The page shows that
the trainer's watermarked replay is being prepared, then plays it: every file it plays
is rendered for this trainer (the real detector names them from the bytes the page
fetched, the audit log holds the issued ids). The videos play in sync with one clock,
the stroke is drawn over the patient's video exactly between the moments it was drawn
and undone, and seeking, pausing and speed work.

The server prints no trainer link, so the test mints one with the data directory's
token secret. Until signalling/app.py serves the replay routes itself, the server is
started through a small wrapper that adds them (and does nothing once they are there).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from annotate.model import PALETTE
from recorder.audit import AuditLog
from recorder.reader import writer_alive
from recorder.watermark_store import open_registry
from signalling.secrets_store import load_or_create_secret
from signalling.tokens import TokenIssuer
from watermark.registry import ISSUE_ACTION
from watermark.trace import trace_clip

from .harness import REPO_ROOT, poll, start_sfu_server
from .test_annotation import close_to, probe
from .test_pages import wait_for_live_remote_video

FILLER = PALETTE["filler"]
STROKE = [[round(0.38 + 0.03 * i, 3), 0.45] for i in range(9)]
PATIENT_VIDEO = ".replay-tile[data-role=patient] video"
PATIENT_CANVAS = ".replay-tile[data-role=patient] canvas.annotation-layer"

WRAPPER = """\
import sys
sys.path.insert(0, {root!r})
import run
from signalling.replay_api import replay_routes

_create_app = run.create_app


def create_app(services):
    app = _create_app(services)
    if not any(getattr(r.resource, "canonical", None) == "/api/replay/recordings" for r in app.router.routes()):
        app.add_routes(replay_routes(services))
    return app


run.create_app = create_app
run.main()
"""


@pytest.fixture
def replay_server(netns, tmp_path):
    wrapper = tmp_path / "run_with_replay.py"
    wrapper.write_text(WRAPPER.format(root=str(REPO_ROOT)))
    return start_sfu_server(netns, tmp_path / "data", run_py=wrapper)


def state(driver) -> dict | None:
    return driver.execute_script("return window.trainer && window.trainer.state();")


def recording_dirs(data_dir: Path) -> list[Path]:
    root = data_dir / "recordings"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def send(driver, message: dict) -> None:
    driver.execute_script("window.consultClient._send(arguments[0]);", message)


def fetch_in_page(driver, url: str) -> bytes:
    """The bytes the page gets from `url` (its own fetch, in the browser's network namespace)."""
    driver.set_script_timeout(30)
    result = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], {headers: {Range: 'bytes=0-'}, cache: 'no-store'})
          .then((r) => r.ok ? r.blob() : Promise.reject(new Error(String(r.status))))
          .then((blob) => { const reader = new FileReader(); reader.onload = () => done(reader.result);
                            reader.readAsDataURL(blob); })
          .catch((err) => done('error:' + err));""", url)
    assert result.startswith("data:"), result
    return base64.b64decode(result.split(",", 1)[1])


def overlay_drawn(driver) -> str | None:
    s = state(driver)
    return s["overlays"][0]["drawn"] if s and s["overlays"] else None


@pytest.mark.browser
def test_trainer_replays_a_recorded_call(replay_server, chromium, tmp_path):
    server = replay_server

    def diagnostics(summary: str) -> str:
        saved = chromium.save_diagnostics("failure")
        return "\n".join([summary, f"artifacts in {tmp_path}:", *(f"  {p}" for p in saved),
                          chromium.console_summary(), server.output()])

    # -- a short call, recorded ---------------------------------------------------------
    patient = chromium("patient")
    doctor = chromium("doctor")
    patient.get(server.patient_url)
    doctor.get(server.doctor_url)
    live, last = wait_for_live_remote_video({"doctor": (doctor, "patient"), "patient": (patient, "doctor")})
    assert len(live) == 2, diagnostics(f"no live call: {json.dumps(last, default=str)}")

    send(doctor, {"type": "record", "action": "start"})
    recording = poll(lambda: next((p for p in recording_dirs(server.data_dir) if writer_alive(p)), None), 15)
    assert recording, diagnostics("the recording never started")
    time.sleep(2.0)
    send(doctor, {"type": "annotate", "op": "add", "ref": "c-1",
                  "shape": {"kind": "freehand", "points": STROKE, "item": "filler", "width": 8}})
    time.sleep(2.5)
    send(doctor, {"type": "annotate", "op": "undo"})
    time.sleep(1.5)
    send(doctor, {"type": "record", "action": "stop"})
    assert poll(lambda: not writer_alive(recording), 15), diagnostics("the recording never stopped")

    # -- the trainer opens it -----------------------------------------------------------
    issuer = TokenIssuer(load_or_create_secret(server.data_dir / "token.secret"))
    token = issuer.mint(room="demo", identity="trainer-1", name="Dr Trainer", role="trainer", ttl_s=600)
    trainer = chromium("trainer")
    trainer.get(server.url("/trainer") + "#token=" + token)
    assert "token=" not in trainer.current_url  # the token leaves the address bar at once
    item = poll(lambda: trainer.find_element(By.CSS_SELECTOR, f".recording[data-id='{recording.name}']"), 15)
    assert item, diagnostics("the trainer page did not list the recording")
    assert item.get_attribute("data-state") == "complete"
    assert "Patient (Patient)" in item.text and "Doctor (Doctor)" in item.text, item.text
    item.find_element(By.CSS_SELECTOR, "button").click()

    def ready():
        s = state(trainer)
        if not s or len(s["tracks"]) != 2:
            return None
        return s if all(t["readyState"] >= 1 and t["duration"] for t in s["tracks"]) else None

    s = poll(ready, 20)
    assert s, diagnostics(f"the replay did not load: {state(trainer)}")

    # -- what plays is this trainer's watermarked replay, prepared on request ----------------
    prepared = poll(lambda: (lambda st: st if all(t["render"]["state"] == "ready" for t in st["tracks"]) else None)(
        state(trainer)), 60)
    assert prepared, diagnostics(f"the watermarked replay was never ready: {state(trainer)}")
    assert prepared["preparingShown"], prepared  # "Preparing the watermarked replay… N %" was on screen
    for track in prepared["tracks"]:
        assert track["render"]["statesSeen"][0] in ("queued", "rendering"), track  # prepared for this request
        assert track["render"]["watermark"] and track["render"]["progress"] == 1.0, track
    # the status line follows on the page's next tick (render states are read live, the status is not)
    assert poll(lambda: "Preparing" not in state(trainer)["status"], 5), state(trainer)["status"]
    issued = {e["details"]["participant"]: e for e in AuditLog.open(server.data_dir).authentic_entries()
              if e["action"] == ISSUE_ACTION}
    assert {t["key"]: t["render"]["watermark"] for t in prepared["tracks"]} == {
        key: e["details"]["watermark_id"] for key, e in issued.items()}
    assert all((e["actor"], e["details"]["viewer_name"], e["details"]["purpose"])
               == ("trainer-1", "Dr Trainer", "replay")
               for e in issued.values())
    media_url = trainer.execute_script(
        "return window.trainer.player.tracks.find((t) => t.participant.role === 'patient').urls.media;")
    clip = tmp_path / "patient-replay.webm"
    clip.write_bytes(fetch_in_page(trainer, media_url))
    traced = trace_clip(clip, open_registry(server.data_dir))
    assert traced.verdict == "identified", diagnostics(f"the patient's replay is not traced: {traced.as_dict()}")
    assert (traced.issued.viewer, traced.issued.purpose) == ("trainer-1", "replay")
    assert sorted((t["name"], t["role"]) for t in s["tracks"]) == [("Doctor", "doctor"), ("Patient", "patient")]
    labels = [e.text for e in trainer.find_elements(By.CSS_SELECTOR, ".replay-tile .tile-label")]
    assert any("Patient" in label for label in labels) and any("Doctor" in label for label in labels), labels
    events = trainer.execute_script("return window.trainer.player.rec.events;")
    added = next(e["at_ms"] for e in events if e["event"]["type"] == "annotation" and e["event"]["op"] == "add")
    undone = next(e["at_ms"] for e in events if e["event"]["type"] == "annotation" and e["event"]["op"] == "undo")
    assert 1500 <= added < undone <= s["duration"] * 1000, (added, undone, s["duration"])

    def seek(seconds: float) -> dict | None:
        trainer.execute_script("window.trainer.player.seek(arguments[0]);", seconds)

        def settled():
            st = state(trainer)
            active = [t for t in st["tracks"] if t["active"]]
            if abs(st["time"] - seconds) > 0.01 or not active:
                return None
            ok = all(not t["seeking"] and t["readyState"] >= 2 and abs(t["drift"]) <= 0.05 for t in active)
            return st if ok else None

        return poll(settled, 10, interval=0.1)

    def stroke_pixels():
        return probe(trainer, PATIENT_VIDEO, PATIENT_CANVAS, [tuple(p) for p in STROKE[1:-1]])

    # -- the stroke is there between its add and its undo, and only then ------------------
    log_item = trainer.find_element(By.XPATH, "//ol[@id='events']//button[contains(., 'drew a line')]")
    log_item.click()  # seeks to the moment it was drawn
    # a seek may wait for the watermarked render to reach that moment: allow for a busy machine
    assert poll(lambda: abs(state(trainer)["time"] - added / 1000) < 0.01, 15), diagnostics(
        f"log click did not seek to {added / 1000}: {state(trainer)}")
    assert poll(lambda: overlay_drawn(trainer) == "1", 5), diagnostics(f"stroke not drawn: {state(trainer)}")
    found = poll(lambda: (lambda px: px if all(p["alpha"] > 128 and close_to(p["rgb"], FILLER) for p in px) else None)(
        stroke_pixels()), 5)
    assert found, diagnostics(f"no filler-coloured stroke over the patient's video: {stroke_pixels()}")
    patient_track = next(t for t in state(trainer)["tracks"] if t["role"] == "patient")
    assert patient_track["videoWidth"] > 0

    assert seek((added - 400) / 1000), diagnostics(f"seek before the stroke did not settle: {state(trainer)}")
    assert poll(lambda: overlay_drawn(trainer) == "0", 5)
    assert all(p["alpha"] == 0 for p in stroke_pixels())
    assert seek((undone - 200) / 1000)
    assert poll(lambda: overlay_drawn(trainer) == "1", 5)
    assert seek((undone + 200) / 1000)
    assert poll(lambda: overlay_drawn(trainer) == "0", 5), diagnostics(f"undo not replayed: {state(trainer)}")

    # -- play: every video advances with the one clock ------------------------------------
    assert seek(0.5)
    before = state(trainer)
    trainer.find_element(By.ID, "play").click()
    time.sleep(2.0)
    during = state(trainer)
    assert during["playing"], diagnostics(f"not playing: {during}")
    assert during["time"] - before["time"] >= 1.2, diagnostics(f"the clock hardly moved: {before} -> {during}")
    for b, d in zip(before["tracks"], during["tracks"]):
        assert d["currentTime"] - b["currentTime"] >= 1.0, diagnostics(f"{d['role']} video did not play: {b} -> {d}")
        assert not d["paused"] and abs(d["drift"]) <= 0.15, diagnostics(f"{d['role']} out of sync: {d}")
        if d["frames"] is not None and b["frames"] is not None:
            assert d["frames"] > b["frames"], d

    # 2x: twice as fast, still in sync
    trainer.find_element(By.CSS_SELECTOR, "#speeds [data-rate='2']").click()
    t0 = state(trainer)["time"]
    time.sleep(1.0)
    fast = state(trainer)
    if fast["playing"]:  # not yet at the end
        assert fast["time"] - t0 >= 1.5, diagnostics(f"2x is not faster: {t0} -> {fast}")
        assert all(t["playbackRate"] >= 1.8 for t in fast["tracks"] if t["active"]), fast
        assert all(abs(t["drift"]) <= 0.3 for t in fast["tracks"] if t["active"]), fast

    # pause: the clock and the videos stop
    trainer.find_element(By.ID, "play").click()
    paused = state(trainer)
    time.sleep(0.6)
    still = state(trainer)
    assert not still["playing"] and still["time"] == paused["time"]
    assert all(t["paused"] for t in still["tracks"])

    # seek with the slider, as a user would drag it
    target = round(still["duration"] / 2, 1)  # the slider steps by 100 ms
    trainer.execute_script(
        "const s = document.getElementById('seek'); s.value = String(arguments[0]);"
        "s.dispatchEvent(new Event('input', {bubbles: true}));", round(target * 1000))
    settled = poll(lambda: (lambda st: st if all(
        not t["seeking"] and abs(t["drift"]) <= 0.05 for t in st["tracks"] if t["active"])
        and abs(st["time"] - target) < 0.01 else None)(state(trainer)), 10, interval=0.1)
    assert settled, diagnostics(f"the slider did not seek every video: {state(trainer)}")
    clock = trainer.find_element(By.ID, "clock").text
    assert clock.startswith(f"0:{int(target):02d}"), clock

    # a media request that fails (e.g. its signed URL expired while the page was open) gets a
    # fresh URL and the video carries on from the clock
    trainer.execute_script(
        "const v = document.querySelector(arguments[0]); v.src = v.src.replace(/sig=[^&]+/, 'sig=forged');",
        PATIENT_VIDEO)
    recovered = poll(lambda: (lambda st: st if all(
        t["readyState"] >= 2 and not t["seeking"] and t["error"] is None and abs(t["drift"]) <= 0.05
        for t in st["tracks"] if t["active"]) else None)(state(trainer)), 15, interval=0.2)
    assert recovered, diagnostics(f"the video did not recover from a failed request: {state(trainer)}")
    src = trainer.execute_script("return document.querySelector(arguments[0]).src;", PATIENT_VIDEO)
    assert "sig=forged" not in src

    # back to the list
    trainer.find_element(By.ID, "back").click()
    card = f".recording[data-id='{recording.name}']"
    assert poll(lambda: trainer.find_element(By.CSS_SELECTOR, card).is_displayed(), 5)


@pytest.mark.browser
def test_trainer_page_without_a_replay_token_explains(replay_server, chromium):
    page = chromium("page")
    page.get(replay_server.url("/trainer"))
    text = poll(lambda: page.find_element(By.ID, "problem-text").text, 10)
    assert "incomplete" in text
    issuer = TokenIssuer(load_or_create_secret(replay_server.data_dir / "token.secret"))
    doctor = issuer.mint(room="demo", identity="d", name="Dr D", role="doctor", ttl_s=600)
    page.get("about:blank")  # else only the fragment changes, and the page does not load again
    page.get(replay_server.url("/trainer") + "#token=" + doctor)
    text = poll(lambda: (lambda t: t if "does not allow" in t else None)(
        page.find_element(By.ID, "problem-text").text), 10)
    assert text and "does not allow replaying" in text
