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
    # the demo's people are named by their role: named once ("Patient", not "Patient (Patient)")
    meta = item.find_element(By.CSS_SELECTOR, ".recording-meta").text
    assert meta.count("Patient") == 1 and meta.count("Doctor") == 1 and "(" not in meta, meta
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


def write_recording(data_dir: Path, joins: list[tuple[str, str, str, str, int, int]], *, continues=None,
                    part: int = 1) -> str:
    """A recording of the demo room, written into the server's data directory as the server writes
    one: per join (participant id, identity, name, role, from ms, to ms) real VP8 video (320x180, a
    drifting photograph) and Opus sound, its track-owner event, and participant-left when it ends
    before the others."""
    import fractions

    import av
    import numpy as np

    from loadtest.synthetic_video import moving_photo
    from recorder.keys import KeyStore
    from recorder.manifest import TrackInfo
    from recorder.writer import RecordingWriter

    keys = KeyStore.open(data_dir, create=True)
    audit = AuditLog.open(data_dir, create=True)
    tracks, items, events = [], [], []
    end = max(j[5] for j in joins)
    tone = np.repeat((np.sin(np.arange(960) * 2 * np.pi * 440 / 48000) * 3000).astype(np.int16), 2)[None, :]
    for n, (pid, identity, name, role, start, stop) in enumerate(joins):
        tracks += [TrackInfo(f"{pid}-video", "video", "VP8", 90000), TrackInfo(f"{pid}-audio", "audio", "opus", 48000)]
        person = {"id": pid, "identity": identity, "name": name, "role": role}
        events.append((1000 + start, {"type": "track-owner", "participant": person}))
        if stop < end:
            events.append((1000 + stop + 150, {"type": "participant-left", "participant_id": pid, "reason": "left"}))
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = 320, 180, "yuv420p"
        enc.time_base, enc.framerate, enc.bit_rate = fractions.Fraction(1, 30), 30, 300_000
        enc.gop_size = 10 ** 4
        enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        for i, image in enumerate(moving_photo(320, 180, (stop - start) * 30 // 1000, seed=n, fps=30)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts = i
            for packet in enc.encode(frame):
                ms = int(packet.pts * 1000 / 30)
                items.append((1000 + start + ms, f"{pid}-video", ms * 90, packet.is_keyframe, bytes(packet)))
        aenc = av.CodecContext.create("libopus", "w")
        aenc.sample_rate, aenc.layout, aenc.format = 48000, "stereo", "s16"
        for k in range((stop - start) // 20):
            chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="stereo")
            chunk.sample_rate, chunk.pts = 48000, k * 960
            for packet in aenc.encode(chunk):
                items.append((1000 + start + k * 20, f"{pid}-audio", k * 960, False, bytes(packet)))
    writer = RecordingWriter.start(data_dir, keys, room="demo", tracks=tracks, audit=audit, actor="demo-doctor",
                                   fsync=False, continues=continues, part=part)
    merged = sorted([(ms, 0, event) for ms, event in events] + [(item[0], 1, item) for item in items],
                    key=lambda x: (x[0], x[1]))
    for ms, kind, what in merged:
        if kind == 0:
            writer.write_event(ms, what)
        else:
            writer.write_frame(what[1], what[0], what[2], what[3], what[4])
    writer.close()
    return writer.id


def write_photo_set(data_dir: Path, count: int) -> str:
    """The stills of a guided capture, as recorder/stills.py keeps them: an image track and `still` events."""
    from recorder.keys import KeyStore
    from recorder.manifest import TrackInfo
    from recorder.stills import STILLS_TRACK
    from recorder.writer import RecordingWriter

    writer = RecordingWriter.start(data_dir, KeyStore.open(data_dir, create=True), room="demo",
                                   tracks=[TrackInfo(STILLS_TRACK, "image", "jpeg")],
                                   audit=AuditLog.open(data_dir, create=True), actor="demo-doctor", fsync=False)
    for i in range(count):
        writer.write_frame(STILLS_TRACK, 2000 + 800 * i, 0, True, b"\xff\xd8\xff\xe0 photo " + bytes([i]))
        writer.write_event(2000 + 800 * i, {"type": "still", "index": i, "pose": "front", "participant": "p-1"})
    writer.close()
    return writer.id


LONG_NAME = "Mrs Margaret Chen-Oyelaran"


@pytest.mark.browser
def test_one_tile_per_person_labelled_once_and_in_full(replay_server, chromium, tmp_path):
    """A three-person call in which the patient's connection dropped twice and the expert's once:
    six joins, three people. On a 1366x768 trainer window the replay has one tile per person, each
    label in full (nothing cut: scrollWidth <= clientWidth, the whole name in its tooltip) with the
    role once; the patient's tile says "Not connected" between her joins. The listing names each
    person once, lists the photo set apart with its count, and links the recording's two parts."""
    server = replay_server
    data_dir = server.data_dir
    chen = ("patient-7731", LONG_NAME, "patient")
    lee = ("doctor-lee", "Dr Lee", "doctor")
    expert = ("expert-1", "Expert", "expert")
    first = write_recording(data_dir, [
        ("p-1", *chen, 0, 2000), ("p-2", *lee, 0, 8000), ("p-3", *expert, 0, 3000),
        ("p-4", *chen, 3000, 5000), ("p-5", *expert, 4000, 8000), ("p-6", *chen, 6000, 8000)])
    second = write_recording(data_dir, [("p-7", *lee, 0, 2000)], continues=first, part=2)
    photos = write_photo_set(data_dir, 3)

    def diagnostics(summary: str) -> str:
        saved = chromium.save_diagnostics("failure")
        return "\n".join([summary, f"artifacts in {tmp_path}:", *(f"  {p}" for p in saved),
                          chromium.console_summary(), server.output()])

    issuer = TokenIssuer(load_or_create_secret(data_dir / "token.secret"))
    token = issuer.mint(room="demo", identity="trainer-1", name="Dr Trainer", role="trainer", ttl_s=600)
    trainer = chromium("trainer")
    trainer.set_window_size(1366, 768)
    trainer.get(server.url("/trainer") + "#token=" + token)

    # -- the listing --------------------------------------------------------------------------
    item = poll(lambda: trainer.find_element(By.CSS_SELECTOR, f"#recordings .recording[data-id='{first}']"), 15)
    assert item, diagnostics("the trainer page did not list the recording")
    meta = item.find_element(By.CSS_SELECTOR, ".recording-meta").text
    assert meta.count(LONG_NAME) == 1 and meta.count("Dr Lee") == 1 and meta.count("Expert") == 1, meta
    assert f"{LONG_NAME} · Patient" in meta and "Dr Lee · Doctor" in meta and "(" not in meta, meta
    later = trainer.find_element(By.CSS_SELECTOR, f"#recordings .recording[data-id='{second}']")
    assert "Part 2" in later.text and "Part 1" in item.text, (later.text, item.text)
    link = later.find_element(By.CSS_SELECTOR, "a.part-link")
    assert link.get_attribute("href").endswith(f"#recording-{first}") and "Continues part 1" in link.text
    assert item.find_element(By.CSS_SELECTOR, "a.part-link").get_attribute("href").endswith(f"#recording-{second}")
    link.click()
    assert poll(lambda: trainer.execute_script("return document.activeElement.dataset.id;") == first, 5)
    assert "#" not in trainer.current_url  # the fragment is where the page's token came from: left alone
    # the photo set: apart, with its count, not as a recording of no length
    assert not trainer.find_elements(By.CSS_SELECTOR, f"#recordings [data-id='{photos}']")
    photo_set = trainer.find_element(By.CSS_SELECTOR, f"#photo-sets [data-id='{photos}']")
    assert photo_set.is_displayed() and "3 photos" in photo_set.text and "0:00" not in photo_set.text, photo_set.text
    assert not photo_set.find_elements(By.CSS_SELECTOR, "button")

    # -- the replay: one tile per person ------------------------------------------------------
    item.find_element(By.CSS_SELECTOR, "button").click()
    ready = poll(lambda: (lambda st: st if st and len(st["tracks"]) == 3 and all(
        t["readyState"] >= 1 for t in st["tracks"]) else None)(state(trainer)), 30)
    assert ready, diagnostics(f"the replay did not load: {state(trainer)}")
    tiles = trainer.find_elements(By.CSS_SELECTOR, "#stage .replay-tile")
    assert len(tiles) == 3, diagnostics(f"{len(tiles)} tiles for 3 people")
    assert sorted(t["label"] for t in ready["tracks"]) == sorted(
        [f"{LONG_NAME} · Patient", "Dr Lee · Doctor", "Expert"])
    fit = trainer.execute_script("""
        return [...document.querySelectorAll('#stage .replay-tile')].map((tile) => {
          const name = tile.querySelector('.tile-name'), label = tile.querySelector('.tile-label');
          return {text: name.textContent, title: name.title, aria: label.getAttribute('aria-label'),
                  nameFits: name.scrollWidth <= name.clientWidth, labelFits: label.scrollWidth <= label.clientWidth,
                  inside: label.getBoundingClientRect().right <= tile.getBoundingClientRect().right + 0.5,
                  visible: name.getBoundingClientRect().width > 0};
        });""")
    for tile in fit:
        assert tile["nameFits"] and tile["labelFits"] and tile["inside"] and tile["visible"], fit
        assert tile["title"] == tile["text"] == tile["aria"] and "…" not in tile["text"], fit
    assert {t["text"] for t in fit} == {f"{LONG_NAME} · Patient", "Dr Lee · Doctor", "Expert"}, fit

    def absence_at(seconds: float) -> dict:
        trainer.execute_script("window.trainer.player.seek(arguments[0]);", seconds)
        time.sleep(0.3)
        return trainer.execute_script("""
            return Object.fromEntries([...document.querySelectorAll('#stage .replay-tile')].map((tile) =>
              [tile.dataset.role, {absence: tile.dataset.absence,
                                   text: tile.classList.contains('is-absent')
                                     ? tile.querySelector('.tile-absence').textContent : ''}]));""")

    during = absence_at(1.0)
    assert all(v["absence"] == "" for v in during.values()), during
    gap = absence_at(2.6)  # the patient and the expert between two joins; the doctor there
    assert gap["patient"] == {"absence": "trainer.absence.gap", "text": "Not connected"}, gap
    assert gap["doctor"]["absence"] == "" and gap["expert"]["absence"] == "", gap
    back = absence_at(3.6)
    assert back["patient"]["absence"] == "" and back["expert"] == {"absence": "trainer.absence.gap",
                                                                   "text": "Not connected"}, back
    assert absence_at(6.5)["patient"]["absence"] == ""  # her third join plays in the same tile


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
