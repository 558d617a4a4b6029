"""Annotation in real browsers: the doctor draws on the patient's tile with real pointer
input, the server relays it, and the patient page draws it over the patient's own
(mirrored) preview, at the right spot, in the treatment item's colour. Pinned to the
face, a mark follows the patient's face as it moves (a camera clip whose face jumps
between two heights).

Pixel checks map frame coordinates to the page with their own, simpler copy of the
object-fit / mirroring arithmetic (centred picture, no borders), so a mistake in the
pages' mapping shows up as marks in the wrong place.
"""

from __future__ import annotations

import base64
import json
import time

import cv2
import numpy as np
import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.actions.mouse_button import MouseButton
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from annotate.board import AnnotationBoard
from annotate.limits import AuthorRateLimiter
from annotate.model import PALETTE

from .harness import poll
from .test_pages import wait_for_live_remote_video

FILLER = PALETTE["filler"]
PATIENT_TILE = ".tile[data-role=patient]"
# A horizontal stroke left of the centre: on the patient's mirrored preview it must
# show right of the centre (and nothing where it would be unmirrored). Kept near the
# middle because the preview crops the sides (object-fit: cover in a portrait box).
STROKE = [(0.40 + 0.01 * i, 0.42) for i in range(8)]

# Where frame points [x, y] are on the page, and what the canvas holds there:
# [{x, y, clientX, clientY, visible, alpha, rgb}] (the strongest pixel within ±1 px).
PROBE_JS = r"""
const [video, canvas, points] = arguments;
const r = video.getBoundingClientRect();
const cs = getComputedStyle(video);
const vw = video.videoWidth, vh = video.videoHeight;
if (!vw || !vh) return null;
const k = cs.objectFit === 'cover' ? Math.max(r.width / vw, r.height / vh) : Math.min(r.width / vw, r.height / vh);
const w = vw * k, h = vh * k;
const left = r.left + (r.width - w) / 2, top = r.top + (r.height - h) / 2;
const mirrored = cs.transform !== 'none' && new DOMMatrix(cs.transform).a < 0;
const cr = canvas.getBoundingClientRect();
const ratio = canvas.width / cr.width;
const ctx = canvas.getContext('2d', {willReadFrequently: true});
return points.map(([x, y]) => {
  let cx = left + x * w;
  if (mirrored) cx = r.left + r.right - cx;
  const cy = top + y * h;
  const visible = cx >= r.left + 2 && cx <= r.right - 2 && cy >= r.top + 2 && cy <= r.bottom - 2;
  const px = Math.round((cx - cr.left) * ratio), py = Math.round((cy - cr.top) * ratio);
  const d = ctx.getImageData(px - 1, py - 1, 3, 3).data;
  let best = 0;
  for (let i = 4; i < d.length; i += 4) if (d[i + 3] > d[best + 3]) best = i;
  return {x, y, clientX: cx, clientY: cy, visible, mirrored,
          alpha: d[best + 3], rgb: [d[best], d[best + 1], d[best + 2]]};
});
"""

# The annotation state a page holds, for assertions and for failure messages.
BOARD_JS = r"""
const c = window.consultClient;
if (!c) return null;
const canvases = [...document.querySelectorAll('canvas.annotation-layer')].map(el => ({
  parent: el.parentElement.id || el.parentElement.className, shapes: el.dataset.shapes, drawn: el.dataset.drawn,
  frame: el.dataset.frame ?? null, drawing: el.classList.contains('is-drawing'),
  pointerEvents: getComputedStyle(el).pointerEvents, width: el.width, height: el.height}));
return {
  version: c.annotations.version,
  shapes: [...c.annotations.shapes.values()],
  pending: [...c.pendingAnnotations.keys()],
  permissions: c.self ? c.self.permissions : null,
  identity: c.self ? c.self.identity : null,
  canvases,
  toolbars: document.querySelectorAll('.annotation-toolbar').length,
};
"""


def board(driver) -> dict:
    return driver.execute_script(BOARD_JS)


def hex_rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def close_to(rgb, color: str, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, hex_rgb(color)))


def probe(driver, video_css: str, canvas_css: str, points) -> list[dict] | None:
    video = driver.find_element(By.CSS_SELECTOR, video_css)
    canvas = driver.find_element(By.CSS_SELECTOR, canvas_css)
    return driver.execute_script(PROBE_JS, video, canvas, [list(p) for p in points])


def drag(driver, client_points: list[tuple[float, float]]) -> None:
    """A real mouse drag through viewport points (pointerdown, pointermoves, pointerup)."""
    actions = ActionBuilder(driver, duration=30)
    mouse = actions.pointer_action
    (x0, y0), rest = client_points[0], client_points[1:]
    mouse.move_to_location(round(x0), round(y0))
    mouse.pointer_down(MouseButton.LEFT)
    for x, y in rest:
        mouse.move_to_location(round(x), round(y))
    mouse.pointer_up(MouseButton.LEFT)
    actions.perform()


def click_at(driver, x: float, y: float) -> None:
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(round(x), round(y)).click()
    actions.perform()


def start_call(sfu_server, chromium, browser_diagnostics, patient_args=()):
    """Patient and doctor in a call, the doctor's console showing the patient's live
    video with the drawing tools, the patient page showing its own preview."""
    patient = chromium("patient", extra_args=patient_args)
    doctor = chromium("doctor")
    patient.get(sfu_server.patient_url)
    doctor.get(sfu_server.doctor_url)
    live, last = wait_for_live_remote_video({"doctor": (doctor, "patient")})
    if "doctor" not in live:
        pytest.fail(browser_diagnostics("the doctor never saw the patient's live video: "
                                        f"{json.dumps(last, default=str)}"),
                    pytrace=False)
    preview = poll(lambda: patient.execute_script("return document.getElementById('local-video').videoWidth"), 10)
    assert preview, browser_diagnostics("the patient's own preview never showed the camera")
    ready = poll(lambda: doctor.execute_script(
        f"return !!document.querySelector('{PATIENT_TILE} .annotation-toolbar')"
        f" && !!document.querySelector('{PATIENT_TILE} canvas.annotation-layer.is-drawing')"), 10)
    assert ready, browser_diagnostics(f"no drawing tools on the doctor's patient tile: {board(doctor)}")
    return patient, doctor


def wait_for_board(driver, predicate, timeout: float = 10.0) -> tuple[bool, dict]:
    state = {}

    def check():
        nonlocal state
        state = board(driver)
        return state is not None and predicate(state)

    return bool(poll(check, timeout)), state


@pytest.mark.browser
def test_doctor_draws_and_patient_sees_the_stroke(sfu_server, chromium, browser_diagnostics):
    patient, doctor = start_call(sfu_server, chromium, browser_diagnostics)
    self_view_width = "return document.getElementById('self-view').getBoundingClientRect().width"
    unmarked_width = patient.execute_script(self_view_width)

    # The pages' palette is the server's.
    palette = doctor.execute_async_script(
        "const done = arguments[0];"
        "import('/static/js/annotation-board.js').then(m => done({...m.PALETTE}), e => done(String(e)));")
    assert palette == PALETTE, f"static/js/annotation-board.js PALETTE differs from annotate/model.py: {palette}"

    # Pick the filler colour and draw with the pen (the default tool), real mouse input.
    doctor.find_element(By.CSS_SELECTOR, f"{PATIENT_TILE} .annotation-toolbar [data-item=filler]").click()
    pen = doctor.find_element(By.CSS_SELECTOR, f"{PATIENT_TILE} .annotation-toolbar [data-tool=freehand]")
    assert pen.get_attribute("aria-pressed") == "true"
    tile_video = f"{PATIENT_TILE} video.remote-video"
    tile_canvas = f"{PATIENT_TILE} canvas.annotation-layer"
    where = probe(doctor, tile_video, tile_canvas, STROKE)
    assert where and all(p["visible"] for p in where), browser_diagnostics(f"stroke not on the doctor's tile: {where}")
    drag(doctor, [(p["clientX"], p["clientY"]) for p in where])

    # The server confirms: the doctor's preview is replaced by the board's shape.
    ok, state = wait_for_board(doctor, lambda s: len(s["shapes"]) == 1 and not s["pending"])
    assert ok, browser_diagnostics(f"the doctor's stroke never came back from the server: {state}")
    shape = state["shapes"][0]
    assert shape["kind"] == "freehand" and shape["anchor"] == "screen", shape
    assert shape["item"] == "filler" and shape["color"] == FILLER and shape["author"] == state["identity"], shape
    xs = [p[0] for p in shape["points"]]
    ys = [p[1] for p in shape["points"]]
    assert abs(min(xs) - STROKE[0][0]) < 0.01 and abs(max(xs) - STROKE[-1][0]) < 0.01, shape["points"]
    assert all(abs(y - STROKE[0][1]) < 0.01 for y in ys), shape["points"]
    # ... and it is drawn on the doctor's tile
    on_doctor = probe(doctor, tile_video, tile_canvas, STROKE)
    assert all(p["alpha"] > 128 and close_to(p["rgb"], FILLER) for p in on_doctor), \
        browser_diagnostics(f"the stroke is not drawn on the doctor's tile: {on_doctor}")

    # The patient page got the event and draws it over the mirrored self-view.
    ok, seen = wait_for_board(patient, lambda s: len(s["shapes"]) == 1
                              and any(c["drawn"] == "1" for c in s["canvases"]))
    assert ok, browser_diagnostics(f"the patient page did not get or draw the annotation: {seen}")
    assert seen["shapes"][0]["id"] == shape["id"] and seen["version"] == state["version"], (seen, state)

    # The preview does not grow with marks on it, so it never covers the doctor (issue 17,
    # item 4); the patient taps it to look closer.
    marked_width = patient.execute_script(self_view_width)
    assert abs(marked_width - unmarked_width) < 1, (unmarked_width, marked_width)
    patient.find_element(By.ID, "self-view").click()
    assert patient.find_element(By.ID, "self-view").get_attribute("aria-pressed") == "true"

    def drawn_on_patient():
        found = probe(patient, "#local-video", "#self-view canvas.annotation-layer", STROKE)
        visible = [p for p in found or [] if p["visible"]]
        hit = len(visible) >= 4 and all(p["alpha"] > 128 and close_to(p["rgb"], FILLER) for p in visible)
        return found if hit else None

    found = poll(drawn_on_patient, 5)
    if not found:
        found = probe(patient, "#local-video", "#self-view canvas.annotation-layer", STROKE)
        pytest.fail(browser_diagnostics(f"no filler-coloured stroke where it belongs on the patient's preview: "
                                        f"{json.dumps(found)}\npatient board: {json.dumps(seen)}"), pytrace=False)
    assert all(p["mirrored"] for p in found), "the patient's front-camera preview should be mirrored"
    # What the colour means, under the preview, in the page's language (issue 17, item 14).
    legend = patient.execute_script("""
        const legend = document.querySelector('.mark-legend');
        const box = legend.getBoundingClientRect(), view = document.getElementById('self-view').getBoundingClientRect();
        return {hidden: legend.hidden, items: [...legend.children].map((li) => [li.dataset.item, li.textContent]),
                below: box.top >= view.bottom - 1, aligned: Math.abs(box.left - view.left) < 2,
                inside: box.bottom <= innerHeight && box.width > 0};""")
    assert not legend["hidden"] and legend["items"] == [["filler", "Filler"]], legend
    assert legend["below"] and legend["aligned"] and legend["inside"], legend
    # Mirrored: where the stroke would be unmirrored (x → 1 - x) stays clear.
    unmirrored = probe(patient, "#local-video", "#self-view canvas.annotation-layer", [(1 - x, y) for x, y in STROKE])
    assert all(p["alpha"] == 0 for p in unmirrored if p["visible"]), \
        browser_diagnostics(f"the stroke also shows unmirrored on the patient's preview: {unmirrored}")

    # The patient may not draw: no tools, the overlay takes no input, and a hand-made
    # annotate message is refused by the server without touching the board.
    assert seen["toolbars"] == 0 and seen["permissions"] is not None and "annotate" not in seen["permissions"], seen
    assert all(not c["drawing"] and c["pointerEvents"] == "none" for c in seen["canvases"]), seen["canvases"]
    refused = patient.execute_async_script("""
        const done = arguments[0];
        const c = window.consultClient;
        c.addEventListener('servererror', (e) => done(e.detail.code), {once: true});
        c._send({type: 'annotate', op: 'add', shape: {kind: 'circle', center: [0.5, 0.5], edge: [0.6, 0.5]}});
        setTimeout(() => done('no answer'), 5000);
    """)
    assert refused == "forbidden", refused
    time.sleep(0.5)
    for label, driver in (("patient", patient), ("doctor", doctor)):
        after = board(driver)
        assert len(after["shapes"]) == 1 and after["version"] == state["version"], (label, after)

    # The same console on a tablet (touch, 1024x768): every drawing button is a finger's
    # 44 px target (issue 17, item 14: the swatches were 30x36).
    doctor.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": True})
    doctor.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    sizes = poll(lambda: doctor.execute_script(f"""
        if (!matchMedia('(pointer: coarse)').matches) return null;
        return [...document.querySelectorAll('{PATIENT_TILE} .annotation-toolbar :is(.tool, .swatch)')]
          .filter((b) => b.offsetParent).map((b) => {{
            const box = b.getBoundingClientRect();
            return [b.dataset.item || b.dataset.tool || b.className, box.width, box.height];
          }});
    """), 5)
    assert sizes, browser_diagnostics("no coarse pointer or no drawing buttons on the tablet console")
    assert any(name == "filler" for name, _, _ in sizes), sizes
    assert all(w >= 43.5 and h >= 43.5 for _, w, h in sizes), sizes


@pytest.mark.browser
def test_late_joiner_snapshot_text_undo_and_clear(sfu_server, chromium, browser_diagnostics):
    patient, doctor = start_call(sfu_server, chromium, browser_diagnostics)
    tile_video = f"{PATIENT_TILE} video.remote-video"
    tile_canvas = f"{PATIENT_TILE} canvas.annotation-layer"
    toolbar = f"{PATIENT_TILE} .annotation-toolbar"

    # An arrow in the lesion colour ...
    doctor.find_element(By.CSS_SELECTOR, f"{toolbar} [data-item=lesion]").click()
    doctor.find_element(By.CSS_SELECTOR, f"{toolbar} [data-tool=arrow]").click()
    where = probe(doctor, tile_video, tile_canvas, [(0.3, 0.7), (0.45, 0.5)])
    drag(doctor, [(where[0]["clientX"], where[0]["clientY"]),
                  ((where[0]["clientX"] + where[1]["clientX"]) / 2, (where[0]["clientY"] + where[1]["clientY"]) / 2),
                  (where[1]["clientX"], where[1]["clientY"])])
    # ... and a text label: a click with the text tool opens a field there.
    doctor.find_element(By.CSS_SELECTOR, f"{toolbar} [data-tool=text]").click()
    at = probe(doctor, tile_video, tile_canvas, [(0.55, 0.3)])[0]
    click_at(doctor, at["clientX"], at["clientY"])
    field = poll(lambda: doctor.find_element(By.CSS_SELECTOR, f"{PATIENT_TILE} .annotation-text-field"), 5)
    assert field, browser_diagnostics("the text tool opened no text field")
    field.send_keys("1 ml", Keys.ENTER)

    ok, state = wait_for_board(doctor,
                               lambda s: [x["kind"] for x in s["shapes"]] == ["arrow", "text"] and not s["pending"])
    assert ok, browser_diagnostics(f"arrow and text did not reach the board: {state}")
    arrow, text = state["shapes"]
    assert arrow["color"] == PALETTE["lesion"] and text["text"] == "1 ml" and text["item"] == "lesion", state
    assert abs(arrow["from"][0] - 0.3) < 0.01 and abs(arrow["to"][1] - 0.5) < 0.01, arrow
    assert abs(text["at"][0] - 0.55) < 0.01 and abs(text["at"][1] - 0.3) < 0.01, text
    # the label's box is drawn at its corner: dark box, opaque
    corner = probe(doctor, tile_video, tile_canvas, [(0.555, 0.305)])[0]
    assert corner["alpha"] > 100, browser_diagnostics(f"no text box on the doctor's tile: {corner}")

    # An expert joining now gets both from the snapshot; the expert may draw but not clear.
    expert = chromium("expert")
    expert.get(sfu_server.expert_url)
    ok, late = wait_for_board(expert, lambda s: s["version"] == state["version"] and len(s["shapes"]) == 2
                              and any(c["drawn"] == "2" for c in s["canvases"]), timeout=20)
    assert ok, browser_diagnostics(f"the late-joining expert did not get and draw the board: {late}")
    tools = expert.execute_script(
        f"const bar = document.querySelector('{toolbar}');"
        "return bar && {tools: bar.querySelectorAll('[data-tool]').length,"
        " clearHidden: bar.querySelector('.annotation-clear').hidden}")
    assert tools == {"tools": 4, "clearHidden": True}, tools
    assert doctor.find_element(By.CSS_SELECTOR, f"{toolbar} .annotation-clear").is_displayed()

    # Ctrl+Z undoes the doctor's newest mark (the text) everywhere.
    ActionChains(doctor).key_down(Keys.CONTROL).send_keys("z").key_up(Keys.CONTROL).perform()
    for label, driver in (("doctor", doctor), ("patient", patient), ("expert", expert)):
        ok, after = wait_for_board(driver, lambda s: [x["kind"] for x in s["shapes"]] == ["arrow"])
        assert ok, browser_diagnostics(f"undo did not reach the {label}: {after}")

    # Clear takes two presses (it cannot be undone).
    clear = doctor.find_element(By.CSS_SELECTOR, f"{toolbar} .annotation-clear")
    clear.click()
    assert clear.get_attribute("data-confirm") is not None
    assert len(board(doctor)["shapes"]) == 1
    clear.click()
    for label, driver in (("doctor", doctor), ("patient", patient), ("expert", expert)):
        ok, after = wait_for_board(driver, lambda s: not s["shapes"] and all(c["drawn"] == "0" for c in s["canvases"]))
        assert ok, browser_diagnostics(f"clear did not reach the {label}: {after}")


# The page's renderer on a 1280x720 grey canvas, one PNG (data URL) per [shape, with
# the face or not]; and the page's face anchors for `points` (null: off the face).
PAGE_RENDER_JS = r"""
const [items, face, points, done] = arguments;
(async () => {
  await document.fonts.load('20px "DejaVu Sans"');
  const {drawShapes} = await import('/static/js/annotation-render.js');
  const {anchorPoints} = await import('/static/js/annotation-face.js');
  const renders = items.map(([shape, withFace]) => {
    const canvas = document.createElement('canvas');
    canvas.width = 1280;
    canvas.height = 720;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = 'rgb(128, 128, 128)';
    ctx.fillRect(0, 0, 1280, 720);
    const drawn = drawShapes(ctx, [shape], {x: 0, y: 0, width: 1280, height: 720}, {face: withFace ? face : null});
    return {drawn, png: canvas.toDataURL('image/png')};
  });
  const anchors = points.map((p) => anchorPoints([p], face.landmarks, face.triangles)?.[0] ?? null);
  return {renders, anchors};
})().then(done, (e) => done(String(e)));
"""

# One of each kind, a label pushed back inside the frame, a dot, a face-anchored
# circle (skipped by both: no landmarks), thick and thin strokes.
SPEC_SHAPES = [
    {"kind": "freehand", "points": [[0.1, 0.2], [0.3, 0.25], [0.35, 0.5]], "width": 6, "color": "#ff0000"},
    {"kind": "freehand", "points": [[0.5, 0.5]], "width": 20, "color": "#00ff00"},
    {"kind": "circle", "center": [0.5, 0.5], "edge": [0.6, 0.55], "width": 3, "color": "#0000ff"},
    {"kind": "arrow", "from": [0.2, 0.8], "to": [0.6, 0.6], "width": 8, "color": "#ffff00"},
    {"kind": "arrow", "from": [0.9, 0.1], "to": [0.91, 0.11], "width": 4, "color": "#ff00ff"},
    {"kind": "text", "at": [0.2, 0.3], "text": "Filler 1 ml", "color": "#00ffff"},
    {"kind": "text", "at": [0.97, 0.98], "text": "corner label", "color": "#ffffff"},
    {"kind": "circle", "anchor": "face", "center": [10, 0.2, 0.2], "edge": [11, 0.3, 0.3], "color": "#ff8800"},
]


def face_spec_shapes(landmarks: np.ndarray) -> list[dict]:
    """Face-anchored marks of each kind on the portrait's face (anchored by the server's
    own anchoring), drawn by both renderers with the same landmarks."""
    from annotate.anchoring import anchor_points

    def on_face(*points):
        return [[t, round(u, 5), round(v, 5)] for t, u, v in anchor_points(points, landmarks)]

    eye, mouth, nose, chin = (landmarks[i, :2] for i in (263, 291, 1, 152))
    cheek = [eye + (mouth - eye) * k / 9 + (0.01 * np.sin(k), 0) for k in range(10)]
    return [
        {"kind": "freehand", "anchor": "face", "points": on_face(*cheek), "width": 5, "color": "#ff00ff"},
        {"kind": "circle", "anchor": "face", "center": on_face(nose)[0], "edge": on_face(nose + (0.02, 0.01))[0],
         "width": 3, "color": "#00ff00"},
        {"kind": "arrow", "anchor": "face", "from": on_face(chin + (0.05, 0.02))[0], "to": on_face(mouth)[0],
         "width": 6, "color": "#ffff00"},
        {"kind": "text", "anchor": "face", "at": on_face(eye)[0], "text": "Toxin 4 U", "color": "#00ffff"},
    ]


def _changed(image: np.ndarray) -> np.ndarray:
    """Pixels clearly changed from the grey background (coverage over ~1/3)."""
    return np.abs(image.astype(np.int16) - 128).max(axis=2) > 40


@pytest.mark.browser
def test_page_drawing_and_face_anchoring_match_the_server(sfu_server, chromium, browser_diagnostics):
    """annotate/render.py is the drawing spec's reference: the page's marks cover the
    same pixels, give or take a pixel of anti-aliasing, face-anchored ones too (resolved
    with the same landmarks; without landmarks neither draws them). And the page anchors
    a point to the face exactly as annotate/anchoring.py does (same triangle, same
    weights), so a mark pinned on a console is where the doctor put it everywhere."""
    from annotate.anchoring import FACE_TRIANGLES, OffFaceError, anchor_points
    from annotate.render import render
    from tests.annotate.conftest import Pose, detect_face_px, load_portrait

    # A real face (MediaPipe on the sample portrait), turned and placed in the frame, its
    # landmarks as the pages get them: (x, y), 4 decimals.
    landmarks = np.round(Pose(detect_face_px(load_portrait()), angle_deg=12, scale=1.2,
                              centre=(700, 380)).landmarks()[:, :2], 4)
    board = AnnotationBoard(limiter=AuthorRateLimiter(rate=1e9, burst=1e9))
    for shape in [*SPEC_SHAPES, *face_spec_shapes(landmarks)]:
        board.apply("doctor", {"op": "add", "shape": shape})
    shapes = json.loads(json.dumps(board.snapshot()))["shapes"]
    # The last of SPEC_SHAPES is face-anchored and drawn without a face; the rest with it.
    with_face = [i >= len(SPEC_SHAPES) for i in range(len(shapes))]
    rng = np.random.default_rng(7)
    points = [*rng.uniform(landmarks[:468].min(axis=0) - 0.05, landmarks[:468].max(axis=0) + 0.05, (400, 2)),
              (0.02, 0.02), (0.98, 0.5)]

    page = chromium("page")
    page.get(sfu_server.url("/patient"))  # no token: an idle page is all that is needed
    face = {"landmarks": landmarks.tolist(), "triangles": FACE_TRIANGLES.tolist()}
    result = page.execute_async_script(PAGE_RENDER_JS, [[s, f] for s, f in zip(shapes, with_face)], face,
                                       [list(map(float, p)) for p in points])
    assert isinstance(result, dict), browser_diagnostics(f"the page could not render: {result}")

    # Anchoring: identical choice; weights equal to the last bit or so (same formulas).
    off_face = 0
    for point, theirs in zip(points, result["anchors"]):
        try:
            ours = list(anchor_points([point], landmarks)[0])
        except OffFaceError:
            ours = None
        if ours is None or theirs is None:
            assert ours is None and theirs is None, (point, ours, theirs)
            off_face += 1
            continue
        assert theirs[0] == ours[0] and np.allclose(theirs[1:], ours[1:], rtol=0, atol=1e-12), (point, ours, theirs)
    assert 2 <= off_face < len(points) / 2, off_face  # both cases were exercised

    kernel = np.ones((3, 3), np.uint8)
    for shape, face_known, rendered in zip(shapes, with_face, result["renders"]):
        expected = render(np.full((720, 1280, 3), 128, np.uint8), [shape], landmarks if face_known else None)
        png = base64.b64decode(rendered["png"].split(",", 1)[1])
        drawn = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        ours, theirs = _changed(drawn), _changed(expected)
        label = f"{shape['kind']} {shape.get('anchor')} {shape.get('text', '')}".strip()
        if not face_known and shape["anchor"] == "face":
            assert rendered["drawn"] == 0 and not ours.any() and not theirs.any(), label
            continue
        result_drawn = rendered["drawn"]
        assert result_drawn == 1 and theirs.any(), label
        # every changed pixel of one lies within a pixel of the other's
        near_theirs = cv2.dilate(theirs.astype(np.uint8), kernel).astype(bool)
        near_ours = cv2.dilate(ours.astype(np.uint8), kernel).astype(bool)
        stray, missing = int((ours & ~near_theirs).sum()), int((theirs & ~near_ours).sum())
        # A few pixels anyway (OpenCV's anti-aliased polygons are about half a pixel
        # fatter); text: the glyphs are rasterised by two engines, the box must match.
        share = 0.05 if shape["kind"] == "text" else 0.01
        if stray > max(share * ours.sum(), 4) or missing > max(share * theirs.sum(), 4):
            stray, missing = stray / max(ours.sum(), 1), missing / max(theirs.sum(), 1)
            cv2.imwrite(str(chromium.artifact_dir / f"spec-{shape['id']}-page.png"), drawn)
            cv2.imwrite(str(chromium.artifact_dir / f"spec-{shape['id']}-export.png"), expected)
            pytest.fail(f"{label}: {stray:.1%} of the page's pixels are off the export's, "
                        f"{missing:.1%} of the export's missing on the page "
                        f"(images in {chromium.artifact_dir})", pytrace=False)


# --- face-anchored marks follow the face ------------------------------------------------

FACE_PHASES = (0.38, 0.60)  # the face's centre (share of the frame height) in each half of the clip
TOXIN = PALETTE["toxin"]


def write_moving_face_y4m(path, width: int = 480, height: int = 360, seconds_per_phase: float = 2.5,
                          fps: int = 15):
    """The sample portrait as a camera clip (looped by Chromium) whose face jumps between
    two heights every `seconds_per_phase`, for --use-file-for-fake-video-capture."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    scale = 0.6 * height / photo.shape[0]
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = photo.shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for centre in FACE_PHASES:
            image = np.full((height, width, 3), 40, np.uint8)
            y0, x0 = round(centre * height - ph / 2), (width - pw) // 2
            image[y0:y0 + ph, x0:x0 + pw] = photo
            frame = b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes()
            out.write(frame * round(seconds_per_phase * fps))
    return path


# The patient's preview: the landmarks the page was sent ({t_ms: [[i, x, y], …]}).
PATIENT_FACE_LISTENER_JS = r"""
window.__face = {};
window.consultClient.addEventListener('analysis', (e) => {
  if (e.detail.kind === 'face-landmarks') window.__face[e.detail.t_ms] = e.detail.landmarks;
});
"""

# The doctor's newest landmarks of the patient ({t_ms, landmarks} or null).
DOCTOR_FACE_LISTENER_JS = r"""
window.__latestFace = null;
window.consultClient.addEventListener('analysis', (e) => {
  const {kind, face, t_ms} = e.detail;
  if (kind === 'face-metrics' && face) window.__latestFace = {t_ms, landmarks: face.landmarks};
});
"""

# Where the mark of colour `rgb` is painted over the patient's preview, as a box in frame
# coordinates by this test's own arithmetic (object-fit: cover, centred, mirrored), and
# the `t_ms` of the landmarks the page drew it with.
PATIENT_MARK_JS = r"""
const rgb = arguments[0];
const video = document.getElementById('local-video');
const canvas = document.querySelector('#self-view canvas.annotation-layer');
if (!video || !canvas || !video.videoWidth || !canvas.width) return null;
const r = video.getBoundingClientRect();
const k = Math.max(r.width / video.videoWidth, r.height / video.videoHeight);
const w = video.videoWidth * k, h = video.videoHeight * k;
const left = r.left + (r.width - w) / 2, top = r.top + (r.height - h) / 2;
const cs = getComputedStyle(video);
const mirrored = cs.transform !== 'none' && new DOMMatrix(cs.transform).a < 0;
const cr = canvas.getBoundingClientRect();
const ratio = canvas.width / cr.width;
const data = canvas.getContext('2d', {willReadFrequently: true}).getImageData(0, 0, canvas.width, canvas.height).data;
let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity, count = 0;
for (let y = 0; y < canvas.height; y++) {
  for (let x = 0; x < canvas.width; x++) {
    const i = (y * canvas.width + x) * 4;
    const off = Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1]) + Math.abs(data[i + 2] - rgb[2]);
    if (data[i + 3] < 100 || off > 90) continue;
    count++;
    if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
  }
}
const fx = (px) => { const cx = cr.left + px / ratio; return ((mirrored ? r.left + r.right - cx : cx) - left) / w; };
const fy = (py) => (cr.top + py / ratio - top) / h;
const xs = [fx(x0), fx(x1 + 1)].sort((a, b) => a - b);
return {face: canvas.dataset.face ?? null, faceDrawn: canvas.dataset.faceDrawn ?? null, count,
        box: count ? [xs[0], fy(y0), xs[1], fy(y1 + 1)] : null, picture: [w, h], mirrored};
"""


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Each point's distance to the polyline through `line`'s points."""
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((points[:, None] - a) * ab).sum(axis=2) / (ab * ab).sum(axis=1), 0, 1)
    return np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=2).min(axis=1)


@pytest.mark.browser
def test_a_mark_pinned_to_the_face_follows_it_on_the_patients_page(sfu_server, chromium, browser_diagnostics,
                                                                    tmp_path):
    from annotate.anchoring import resolve_points

    clip = write_moving_face_y4m(tmp_path / "moving-face.y4m")
    patient, doctor = start_call(sfu_server, chromium, browser_diagnostics,
                                 patient_args=[f"--use-file-for-fake-video-capture={clip}"])
    patient.execute_script(PATIENT_FACE_LISTENER_JS)
    doctor.execute_script(DOCTOR_FACE_LISTENER_JS)
    toolbar = f"{PATIENT_TILE} .annotation-toolbar"
    tile_video = f"{PATIENT_TILE} video.remote-video"
    tile_canvas = f"{PATIENT_TILE} canvas.annotation-layer"

    # With the patient's face known, "Pin to face" is on by default.
    pin = poll(lambda: doctor.execute_script(f"return document.querySelector('{toolbar} .annotation-pin').dataset.state"
                                             f" === 'on' && document.querySelector('{toolbar}').dataset.anchor"), 30)
    assert pin == "face", browser_diagnostics(f"'Pin to face' never came on: {pin}")
    doctor.find_element(By.CSS_SELECTOR, f"{toolbar} [data-item=toxin]").click()

    # Draw right after the face moved, so the picture holds still while the stroke is drawn.
    def just_moved():
        nonlocal before
        latest = doctor.execute_script("return window.__latestFace")
        if not latest:
            return None
        y = latest["landmarks"][1][1]  # the nose tip
        moved = before is not None and abs(y - before) > 0.1
        before = y
        return latest if moved else None

    before = None
    latest = poll(just_moved, 15, interval=0.05)
    assert latest, browser_diagnostics("the doctor's landmarks never showed the face moving")
    lm = np.array(latest["landmarks"])
    eye, mouth = lm[263], lm[291]  # the patient's left cheek, between eye and mouth corner
    stroke = [tuple(eye + (mouth - eye) * (0.25 + 0.5 * k / 7)) for k in range(8)]
    where = probe(doctor, tile_video, tile_canvas, stroke)
    drag(doctor, [(p["clientX"], p["clientY"]) for p in where])

    ok, state = wait_for_board(doctor, lambda s: len(s["shapes"]) == 1 and not s["pending"])
    assert ok, browser_diagnostics(f"the pinned stroke never reached the board: {state}")
    shape = state["shapes"][0]
    assert shape["anchor"] == "face" and all(len(p) == 3 for p in shape["points"]), shape
    # Pinned where it was drawn (the landmarks may have moved on by a frame or two).
    drawn_at = resolve_points(shape["points"], lm)
    assert np.abs(drawn_at[[0, -1]] - np.array(stroke)[[0, -1]]).max() < 0.01, (drawn_at, stroke)
    assert distance_to_polyline(drawn_at, np.array(stroke)).max() < 0.01, (drawn_at, stroke)
    ok, doc = wait_for_board(doctor, lambda s: any(c["drawn"] == "1" for c in s["canvases"]))
    assert ok and doctor.execute_script(f"return document.querySelector('{tile_canvas}').dataset.faceDrawn") == "1", \
        browser_diagnostics(f"the doctor's tile does not draw the pinned mark: {doc}")

    # The patient's preview draws it with the landmarks the server sends, over ~2.5 face moves.
    rgb = list(hex_rgb(TOXIN))
    samples = []
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        sample = patient.execute_script(PATIENT_MARK_JS, rgb)
        if sample and sample["face"] not in (None, "none") and sample["box"]:
            samples.append(sample)
        time.sleep(0.15)
    sent = patient.execute_script("return window.__face")
    patient.save_screenshot(str(tmp_path / "patient-face-mark.png"))  # for a human look
    doctor.save_screenshot(str(tmp_path / "doctor-face-mark.png"))
    assert len(samples) >= 15, browser_diagnostics(f"the patient's preview rarely drew the mark: {samples[-3:]}")
    assert all(s["mirrored"] for s in samples)

    centres, errors = [], []
    for sample in samples:
        landmarks = np.full((478, 2), np.nan)
        for i, x, y in sent[sample["face"]]:
            landmarks[i] = (x, y)
        expected = resolve_points(shape["points"], landmarks)
        assert not np.isnan(expected).any(), "the page was not sent every landmark the mark needs"
        mid = (expected.min(axis=0) + expected.max(axis=0)) / 2  # round caps: the paint's box has the same centre
        box = np.array(sample["box"])
        painted = (box[:2] + box[2:]) / 2
        errors.append(float(np.abs((painted - mid) * sample["picture"]).max()))  # CSS px
        centres.append(mid)
    centres = np.array(centres)
    assert max(errors) < 3, browser_diagnostics(f"the mark is not where its landmarks put it: {errors}")
    span = np.ptp(centres[:, 1])
    assert span > 0.7 * (FACE_PHASES[1] - FACE_PHASES[0]), \
        browser_diagnostics(f"the mark did not move with the face: its centre spans {span:.3f} of the height "
                            f"(the face moves {FACE_PHASES[1] - FACE_PHASES[0]:.2f}): {centres.tolist()}")

    # A stroke off the face is not pinned: it stays where drawn, and the doctor is told.
    pin = poll(lambda: doctor.execute_script(f"return document.querySelector('{toolbar}').dataset.anchor"
                                             " === 'face'"), 10)
    assert pin, browser_diagnostics("the console lost the patient's face")
    corner = probe(doctor, tile_video, tile_canvas, [(0.90 + 0.01 * i, 0.5) for i in range(5)])  # right of the face
    drag(doctor, [(p["clientX"], p["clientY"]) for p in corner])
    ok, state = wait_for_board(doctor, lambda s: len(s["shapes"]) == 2 and not s["pending"])
    assert ok and state["shapes"][1]["anchor"] == "screen", browser_diagnostics(f"off-face stroke: {state}")
    status = doctor.find_element(By.CSS_SELECTOR, f"{toolbar} .annotation-status")
    assert status.is_displayed() and "off the face" in status.text, status.text
