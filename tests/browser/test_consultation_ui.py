"""The consultation tools in real browsers: the patient page's recording notice,
guidance prompt and photo-protocol steps; the console's record button and REC state,
analysis panel, face-mesh overlay and clinical-photo controls.

The first test runs on Chromium's fake camera, which shows no face: the server's face
analysis then tells the patient to face the camera and gives the clinicians
``face: null``, and no photo can be taken. The second feeds the patient's browser a
portrait (matplotlib's Grace Hopper sample, as in tests/media/processors) as its camera,
so there is a face: metrics, the mesh over the patient's tile, and a real frontal still.

Screenshots of the patient page at phone width are saved in the test's tmp_path.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest
from selenium.webdriver.common.by import By

from .harness import REPO_ROOT, poll
from .test_pages import wait_for_live_remote_video

PHONE = (360, 760)  # CSS px: a small Android phone, portrait

# The patient page's hooks (patient-coach.js), for assertions and failure messages.
PATIENT_UI_JS = r"""
const q = (s) => document.querySelector(s);
const vis = (el) => !!el && !el.closest('[hidden]') && el.getClientRects().length > 0;
const text = (s) => (vis(q(s)) ? q(s).textContent.replace(/\s+/g, ' ').trim() : null);
return {
  connection: document.body.dataset.connectionState,
  recording: q('#recording').dataset.recording, recordingText: text('#recording-strip'),
  guidance: text('#guidance'), prompt: q('#guidance').dataset.prompt ?? null,
  capture: q('#capture-step').dataset.captureState, pose: q('#capture-step').dataset.pose ?? null,
  poseText: text('#capture-pose'), count: text('#capture-count'),
  photoTaken: text('#photo-taken'), photoTakenPose: q('#photo-taken').dataset.pose ?? null,
  toast: text('#toast'), width: innerWidth,
  overflowX: document.documentElement.scrollWidth > innerWidth,
};
"""

# The console's hooks (console-analysis.js).
CONSOLE_UI_JS = r"""
const q = (s) => document.querySelector(s);
const all = (s) => [...document.querySelectorAll(s)];
const vis = (el) => !!el && !el.closest('[hidden]') && el.getClientRects().length > 0;
const text = (s) => (vis(q(s)) ? q(s).textContent.replace(/\s+/g, ' ').trim() : null);
const record = q('#record');
return {
  connection: document.body.dataset.connectionState,
  rec: q('#rec-status').dataset.recording, recText: text('#rec-badge'),
  recordButton: vis(record) ? {label: record.querySelector('.control-label').textContent,
                               disabled: record.disabled, recording: record.dataset.recording} : null,
  face: q('#analysis').dataset.face, updates: Number(q('#analysis').dataset.updates),
  stale: q('#analysis').hasAttribute('data-stale'),
  faceLine: text('#analysis-face'), told: text('#analysis-guidance'),
  metrics: Object.fromEntries(all('#analysis dd[data-metric]').map((d) => [d.dataset.metric, d.textContent])),
  failed: text('#processor-failed'),
  capture: q('#capture').dataset.captureState,
  start: vis(q('#capture-start')) ? {disabled: q('#capture-start').disabled} : null,
  stop: vis(q('#capture-stop')) ? {disabled: q('#capture-stop').disabled} : null,
  steps: all('#capture-steps li').map((li) => ({pose: li.dataset.pose, step: li.dataset.step,
                                                 text: li.textContent.replace(/\s+/g, ' ').trim()})),
  status: text('#capture-status'),
  stills: all('#stills li').map((li) => ({pose: li.dataset.pose, caption: li.querySelector('figcaption').textContent,
                                          loaded: li.querySelector('img').naturalWidth,
                                          src: li.querySelector('img').src.slice(0, 23)})),
  alert: vis(q('#console-alert')) ? {text: text('#console-alert-text'), code: q('#console-alert').dataset.code,
                                     about: q('#console-alert').dataset.about} : null,
  mesh: all('canvas.face-mesh-layer').map((c) => ({points: Number(c.dataset.points), frame: c.dataset.frame ?? null,
                                                    parentRole: c.parentElement.dataset.role ?? null})),
};
"""

# Where the mesh is drawn on the patient's tile, against where the latest landmarks
# belong by this test's own (centred, object-fit: contain) letterbox arithmetic, in
# client px: {drawn: [x0, y0, x1, y1] of the painted pixels, expected: [...] of the
# landmarks, picture: [...] of the video picture}.
MESH_PROBE_JS = r"""
const tile = document.querySelector('.tile[data-role=patient]');
const video = tile.querySelector('video.remote-video');
const canvas = tile.querySelector('canvas.face-mesh-layer');
const points = window.__testLandmarks;
if (!video || !canvas || !points || !video.videoWidth) return null;
const r = video.getBoundingClientRect();
const k = Math.min(r.width / video.videoWidth, r.height / video.videoHeight);
const w = video.videoWidth * k, h = video.videoHeight * k;
const left = r.left + (r.width - w) / 2, top = r.top + (r.height - h) / 2;
const xs = points.map((p) => left + p[0] * w), ys = points.map((p) => top + p[1] * h);
const cr = canvas.getBoundingClientRect();
const ratio = canvas.width / cr.width;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity, painted = 0;
for (let y = 0; y < canvas.height; y++) {
  for (let x = 0; x < canvas.width; x++) {
    if (data[(y * canvas.width + x) * 4 + 3] > 0) {
      painted++;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
    }
  }
}
const toClient = (x, y) => [cr.left + x / ratio, cr.top + y / ratio];
const [dx0, dy0] = toClient(x0, y0), [dx1, dy1] = toClient(x1 + 1, y1 + 1);
return {painted, drawn: [dx0, dy0, dx1, dy1],
        expected: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)],
        picture: [left, top, left + w, top + h], videoBox: [r.left, r.top, r.right, r.bottom]};
"""


def patient_ui(driver) -> dict:
    return driver.execute_script(PATIENT_UI_JS)


def console_ui(driver) -> dict:
    return driver.execute_script(CONSOLE_UI_JS)


def console_ui_after(driver, script: str, *args) -> dict:
    """Runs ``script`` in the console, then reads its hooks in the same turn."""
    return driver.execute_script(f"{script}\nreturn (() => {{{CONSOLE_UI_JS}}})();", *args)


def wait_ui(driver, probe, predicate, timeout: float = 15.0, interval: float = 0.2) -> tuple[bool, dict]:
    """Poll ``probe(driver)`` until ``predicate(state)``; returns (ok, last state)."""
    last: dict = {}

    def check():
        nonlocal last
        last = probe(driver)
        return last is not None and predicate(last)

    return bool(poll(check, timeout, interval)), last


def click(driver, css: str) -> None:
    driver.find_element(By.CSS_SELECTOR, css).click()


def phone_sized(driver) -> None:
    driver.set_window_size(*PHONE)


def screenshot(driver, path: Path) -> Path:
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")
    return path


def start_consultation(sfu_server, chromium, browser_diagnostics, *, patient_args=()):
    """Patient (phone-sized) and doctor in a call, each seeing the other's live video.

    The doctor joins first: guidance is only sent when the prompt changes, and a console
    that joins after the first one was sent does not learn it until the next change."""
    doctor = chromium("doctor")
    doctor.get(sfu_server.doctor_url)
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["connection"] == "connected", timeout=20)
    assert ok, browser_diagnostics(f"the doctor's console did not connect: {cui}")
    patient = chromium("patient", extra_args=patient_args)
    phone_sized(patient)
    patient.get(sfu_server.patient_url)
    pages = {"patient": (patient, "doctor"), "doctor": (doctor, "patient")}
    live, last = wait_for_live_remote_video(pages)
    missing = [label for label in pages if label not in live]
    if missing:
        pytest.fail(browser_diagnostics(f"no live remote video on {missing}: {json.dumps(last, default=str)}"),
                    pytrace=False)
    return patient, doctor


@pytest.mark.browser
def test_recording_guidance_and_photo_protocol_without_a_face(sfu_server, chromium, browser_diagnostics, tmp_path):
    patient, doctor = start_consultation(sfu_server, chromium, browser_diagnostics)
    doctor_name = doctor.execute_script("return window.consultClient.self.name")
    assert patient_ui(patient)["width"] == PHONE[0]

    # Nobody records yet: no notice, no REC; the doctor has the button.
    ui = patient_ui(patient)
    assert ui["recording"] == "off" and ui["recordingText"] is None, ui
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["recordButton"] and not s["recordButton"]["disabled"])
    assert ok, browser_diagnostics(f"the doctor has no usable record button: {cui}")
    assert cui["rec"] == "off" and cui["recText"] is None and cui["recordButton"]["label"] == "Record", cui

    # The fake camera shows no face: the analysis would ask the patient to face the camera,
    # but outside a photo protocol the page says nothing over the doctor's picture ...
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["prompt"] == "face_camera", timeout=20)
    assert ok, browser_diagnostics(f"the patient page never heard the analysis' prompt: {ui}")
    time.sleep(1.0)
    ui = patient_ui(patient)
    assert ui["guidance"] is None and ui["poseText"] is None, ui
    # ... and the doctor's panel says there is no face, updating several times a second,
    # and what the patient is told.
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["face"] == "none" and s["updates"] > 0, timeout=15)
    assert ok, browser_diagnostics(f"the doctor's analysis panel never said 'no face': {cui}")
    assert "no face" in cui["faceLine"].lower(), cui
    assert cui["told"] == "“Please face the camera”", cui
    assert cui["metrics"]["yaw"] == "–" and cui["metrics"]["cast"].startswith("chroma "), cui["metrics"]
    before = cui["updates"]
    time.sleep(1.5)
    cui = console_ui(doctor)
    assert cui["updates"] >= before + 3 and not cui["stale"], f"metrics at 5 Hz expected: {before} -> {cui}"

    # The doctor records: both pages say so.
    click(doctor, "#record")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["rec"] == "on")
    assert ok, browser_diagnostics(f"the doctor's console never showed REC: {cui}")
    assert cui["recText"] == f"REC Recording by {doctor_name}", cui
    assert cui["recordButton"] == {"label": "Stop recording", "disabled": False, "recording": "on"}, cui
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["recording"] == "on")
    assert ok, browser_diagnostics(f"the patient page never showed the recording notice: {ui}")
    assert ui["recordingText"] == f"This consultation is being recorded by {doctor_name}", ui
    assert ui["guidance"] is None and not ui["overflowX"], ui
    screenshot(patient, tmp_path / "patient-360-recording.png")

    # An expert joining now is told at once (the state follows `joined`), and has no
    # record or photo controls; a request made by hand is refused and shown plainly.
    expert = chromium("expert")
    expert.get(sfu_server.expert_url)
    ok, eui = wait_ui(expert, console_ui, lambda s: s["rec"] == "on" and s["connection"] == "connected", timeout=20)
    assert ok, browser_diagnostics(f"the expert's console does not show REC: {eui}")
    assert eui["recText"] == f"REC Recording by {doctor_name}", eui
    assert eui["recordButton"] is None and eui["start"] is None and eui["stop"] is None, eui
    expert.execute_script("window.consultClient._send({type: 'record', action: 'stop'})")
    ok, eui = wait_ui(expert, console_ui, lambda s: s["alert"] is not None)
    assert ok, browser_diagnostics(f"the expert's console did not show the refusal: {eui}")
    assert eui["alert"]["code"] == "forbidden" and "permission" in eui["alert"]["text"], eui["alert"]
    assert console_ui(doctor)["rec"] == "on"

    # The photo protocol: the doctor starts it, the patient is shown the first pose.
    click(doctor, "#capture-start")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["capture"] == "running")
    assert ok, browser_diagnostics(f"the doctor's console never showed the protocol running: {cui}")
    assert [(s["pose"], s["step"]) for s in cui["steps"]] == [
        ("frontal", "current"), ("left45", "pending"), ("right45", "pending")], cui["steps"]
    assert cui["status"].startswith("Photo 1 of 3: Frontal"), cui["status"]
    assert cui["stop"] == {"disabled": False} and cui["start"] is None, cui
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["capture"] == "running")
    assert ok, browser_diagnostics(f"the patient page never showed the requested pose: {ui}")
    # One instruction at a time: the analysis' prompt for the pose, in place of the pose's words.
    assert ui["pose"] == "frontal" and ui["count"] == "Photo 1 of 3", ui
    assert ui["photoTaken"] is None and ui["guidance"] == "Please face the camera" and ui["poseText"] is None, ui
    ok, eui = wait_ui(expert, console_ui, lambda s: s["capture"] == "running")
    assert ok, f"the expert's console does not follow the protocol: {eui}"
    screenshot(patient, tmp_path / "patient-360-recording-capture.png")

    # No face, no photo: after a while still nothing taken; the doctor stops.
    time.sleep(2)
    cui = console_ui(doctor)
    assert cui["stills"] == [] and cui["capture"] == "running", cui
    click(doctor, "#capture-stop")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["capture"] == "stopped")
    assert ok, browser_diagnostics(f"the protocol did not stop: {cui}")
    assert cui["status"] == "Stopped after 0 of 3 photos." and cui["start"] == {"disabled": False}, cui
    assert all(s["step"] == "skipped" for s in cui["steps"]), cui["steps"]
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["capture"] == "idle" and s["poseText"] is None)
    assert ok, browser_diagnostics(f"the patient page still shows a pose after the stop: {ui}")
    assert ui["guidance"] is None, ui

    # The doctor stops recording: the notices go, the patient is told it stopped.
    click(doctor, "#record")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["rec"] == "off")
    assert ok, browser_diagnostics(f"REC did not go off: {cui}")
    assert cui["recText"] is None and cui["recordButton"]["label"] == "Record", cui
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["recording"] == "off")
    assert ok, browser_diagnostics(f"the recording notice stayed: {ui}")
    assert ui["recordingText"] is None and ui["toast"] == "The recording has stopped.", ui
    ok, eui = wait_ui(expert, console_ui, lambda s: s["rec"] == "off")
    assert ok, eui

    # Stopping again is refused by the server; the console says why, in its words.
    doctor.execute_script("window.consultClient.setRecording(false)")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["alert"] is not None)
    assert ok, browser_diagnostics(f"the refusal was not shown: {cui}")
    assert cui["alert"] == {"text": "Recording: Nothing is being recorded", "code": "bad_state", "about": "record"}, cui

    # What cannot be caused from a browser, fed to the console as the server's messages:
    # a recording that stops on a failure, and the face analysis failing.
    doctor.execute_script("""
        const c = window.consultClient;
        c._handle(c._conn, {type: 'recording', state: 'on', recording_id: 'r-test', by: 'Dr Test', t_ms: 1});
        c._handle(c._conn, {type: 'recording', state: 'off', recording_id: 'r-test', reason: 'error: the disk is full',
                            t_ms: 2});""")
    cui = console_ui(doctor)
    assert cui["rec"] == "off" and cui["alert"] == {
        "text": "The recording stopped: the disk is full. The call goes on.", "code": "recording-error",
        "about": "record"}, cui
    patient_id = patient.execute_script("return window.consultClient.self.id")
    # Read in the same script: the real processor's next metrics would clear the notice.
    cui = console_ui_after(doctor, """
        window.consultClient.dispatchEvent(new CustomEvent('analysis', {detail: {
          type: 'processor-failed', processor: 'face-analysis', participant: arguments[0],
          error: 'RuntimeError: model crashed'}}));""", patient_id)
    assert cui["failed"] == ("Face analysis stopped on the patient's video: RuntimeError: model crashed. "
                             "The call goes on; guidance and photos are off."), cui
    assert cui["faceLine"].startswith("No analysis"), cui


def write_face_y4m(path: Path, width: int = 640, height: int = 480, frames: int = 10) -> Path:
    """A still portrait as a Y4M clip, the way PhotoVideoTrack frames it (90 % of the
    frame, centred on grey), for --use-file-for-fake-video-capture."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    scale = min(width / photo.shape[1], height / photo.shape[0]) * 0.9
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    image = np.full((height, width, 3), 40, np.uint8)
    y0, x0 = (height - photo.shape[0]) // 2, (width - photo.shape[1]) // 2
    image[y0:y0 + photo.shape[0], x0:x0 + photo.shape[1]] = photo
    i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F15:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            out.write(b"FRAME\n" + i420)
    return path


@pytest.mark.browser
def test_face_metrics_mesh_overlay_and_a_clinical_photo(sfu_server, chromium, browser_diagnostics, tmp_path):
    clip = write_face_y4m(tmp_path / "face.y4m")
    patient, doctor = start_consultation(sfu_server, chromium, browser_diagnostics,
                                         patient_args=[f"--use-file-for-fake-video-capture={clip}"])
    # The landmarks the console received last, for the placement check below.
    doctor.execute_script("""
        window.consultClient.addEventListener('analysis', (e) => {
          if (e.detail.kind === 'face-metrics' && e.detail.face) window.__testLandmarks = e.detail.face.landmarks;
        });""")

    ok, cui = wait_ui(doctor, console_ui, lambda s: s["face"] == "found", timeout=20)
    assert ok, browser_diagnostics(f"the doctor's panel never found the face: {cui}")
    metrics = cui["metrics"]
    for name in ("yaw", "pitch", "roll"):
        assert re.fullmatch(r"[+−]?\d+\.\d° · .+", metrics[name]), metrics
    assert re.fullmatch(r"\d+% of frame height", metrics["size"]), metrics
    assert re.fullmatch(r"\d+\.\d", metrics["sharpness"]) and metrics["exposure"].startswith("median "), metrics
    assert cui["faceLine"] == "Face found." and cui["mesh"] == [], cui

    # The mesh, on request, over the patient's tile: all 478 points, on the face,
    # within the letterboxed picture.
    click(doctor, "#mesh-toggle")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["mesh"] and s["mesh"][0]["points"] == 478)
    assert ok, browser_diagnostics(f"no face mesh on the patient's tile: {cui['mesh']}")
    assert cui["mesh"][0]["parentRole"] == "patient" and cui["mesh"][0]["frame"], cui["mesh"]
    where = poll(lambda: doctor.execute_script(MESH_PROBE_JS), 5)
    assert where and where["painted"] > 500, browser_diagnostics(f"the mesh painted nothing: {where}")
    for drawn, expected in zip(where["drawn"], where["expected"]):
        assert abs(drawn - expected) < 8, f"mesh drawn at {where['drawn']}, landmarks at {where['expected']}: {where}"
    picture = where["picture"]
    assert (picture[0] - 1 <= where["drawn"][0] and where["drawn"][2] <= picture[2] + 1
            and picture[1] - 1 <= where["drawn"][1] and where["drawn"][3] <= picture[3] + 1), where
    screenshot(doctor, tmp_path / "console-face-mesh.png")
    click(doctor, "#mesh-toggle")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["mesh"] == [])
    assert ok, f"the mesh stayed after switching it off: {cui['mesh']}"

    # The photo protocol: the portrait faces the camera, so the frontal photo is taken;
    # it cannot turn, so the protocol then waits at the left turn until stopped.
    click(doctor, "#capture-start")
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["photoTaken"] is not None, timeout=25, interval=0.1)
    assert ok, browser_diagnostics(f"the patient was never told a photo was taken: {ui}")
    assert ui["photoTaken"] == "Photo taken" and ui["photoTakenPose"] == "frontal", ui
    # the frontal prompt is stale now: the pose's words, until the analysis says more
    assert ui["pose"] == "left45" and (ui["poseText"] is None) != (ui["guidance"] is None), ui
    assert ui["poseText"] in ("Turn your head to your left", None), ui
    assert ui["count"] == "Photo 2 of 3", ui
    screenshot(patient, tmp_path / "patient-360-photo-taken.png")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["stills"] and s["stills"][0]["loaded"])
    assert ok, browser_diagnostics(f"no thumbnail on the doctor's console: {cui}")
    doctor.execute_script("document.getElementById('capture').scrollIntoView()")
    assert cui["stills"] == [{"pose": "frontal", "caption": "Frontal", "loaded": 160,
                              "src": "data:image/jpeg;base64,"}], cui["stills"]
    assert [(s["pose"], s["step"]) for s in cui["steps"]] == [
        ("frontal", "done"), ("left45", "current"), ("right45", "pending")], cui["steps"]
    assert cui["status"].startswith("Photo 2 of 3: Turned left 45°"), cui["status"]
    screenshot(doctor, tmp_path / "console-still.png")

    click(doctor, "#capture-stop")
    ok, cui = wait_ui(doctor, console_ui, lambda s: s["capture"] == "stopped")
    assert ok, browser_diagnostics(f"the protocol did not stop: {cui}")
    assert cui["status"] == "Stopped after 1 of 3 photos." and len(cui["stills"]) == 1, cui
    ok, ui = wait_ui(patient, patient_ui, lambda s: s["capture"] == "idle")
    assert ok, ui


def _js_edges(source: str, name: str) -> list[tuple[int, int]]:
    body = re.search(rf"export const {name} = Object\.freeze\(\[(.*?)\]\);", source, re.S).group(1)
    flat = [int(v) for v in re.findall(r"\d+", body)]
    return list(zip(flat[::2], flat[1::2]))


def test_face_mesh_edges_match_mediapipe():
    """static/js/face-mesh-edges.js is generated from mediapipe's connections."""
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    def undirected(connections):
        return {(min(c.start, c.end), max(c.start, c.end)) for c in connections}

    source = (REPO_ROOT / "static/js/face-mesh-edges.js").read_text()
    tesselation = _js_edges(source, "TESSELATION")
    features = _js_edges(source, "FEATURES")
    assert len(tesselation) == len(set(tesselation)) and len(features) == len(set(features))
    assert set(tesselation) == undirected(C.FACE_LANDMARKS_TESSELATION)
    assert set(features) == undirected([*C.FACE_LANDMARKS_CONTOURS, *C.FACE_LANDMARKS_LEFT_IRIS,
                                        *C.FACE_LANDMARKS_RIGHT_IRIS])
