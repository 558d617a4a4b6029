"""Annotation latency: does everyone in the room see a stroke within 100 ms?

    python -m loadtest.bench_annotation --duration 30 --json /tmp/bench-annotation.json
    python -m loadtest.bench_annotation --server process        # the server as its own process
    python -m loadtest.bench_annotation --browser               # + Chromium: send -> pixels on the patient page

A page sends a stroke as ONE `annotate` message when the pointer is released (the
drag itself is drawn locally: static/js/annotation-tools.js), so a stroke's latency is
that message's: doctor or expert sends it -> the server validates it, adds it to the
board and broadcasts the event -> each other participant has read and parsed it.

For each scenario a server is started on 127.0.0.1 (`--server inproc`, the default:
in this process, as tests/conftest.py does, so the clients share its event loop and
its two cores; `process`: run.py as its own process, as loadtest/harness.py starts
it), a doctor, an expert and a patient join over the real WebSocket protocol
(loadtest.participant: real aiortc peers that answer the server's offers), and the
doctor and the expert each send strokes of `--points` points at `--rate` strokes per
second (±30 % jitter) for `--duration` seconds:

- `signalling`: nobody publishes media; the control plane alone;
- `media`: everyone publishes audio and video and decodes what they receive (the
  patient a face photo, 640x480, the others a pattern, 320x240), the room runs the
  `face-analysis` processor, and the strokes are pinned to the face, so the clinicians
  get `face-metrics` and the patient `face-landmarks` at 5 Hz meanwhile.

Send and arrival times are time.perf_counter() in this one process. Every
measurement step has a time limit; nothing leaves 127.0.0.1.

`--browser` adds two Chromium measurements in a private network namespace (the harness
of tests/browser: root, chromium, chromedriver, iproute2): a doctor console and a
patient page in headless Chromium, the server as the browser tests run it (demo room,
face analysis on); the doctor page sends strokes through its client exactly as its
drawing tools do on pointer-up, and the patient page notes when each stroke's pixels
appear on the canvas over its own preview (checked whenever the overlay redraws, so it
is the moment the canvas holds them; the screen shows them at its next frame). First
screen-anchored strokes over Chromium's fake camera, then strokes pinned to the face
of a portrait fed as the patient's camera (anchored on the doctor page with its own
anchoring, drawn on the patient page with the landmarks the server sends it). Both
pages read the same system clock (performance.timeOrigin + performance.now()); the
report gives the measured offset between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from loadtest.harness import (
    ProcessSampler,
    free_port,
    machine_cpu_ticks,
    machine_info,
    machine_usage,
    make_rooms,
    proc_cpu_seconds,
    start_server,
    stop_process,
    wait_healthy,
)
from loadtest.participant import SyntheticParticipant

ROLES = ("patient", "doctor", "expert")
DRAWERS = ("doctor", "expert")
TARGET_MS = 100.0
SCENARIOS = ("signalling", "media")
MEDIA_TIMEOUT_S = 40.0
BOARD_POINTS_BEFORE_CLEAR = 15_000  # the board holds 20 000 points (annotate/limits.py)


class ArrivalLog(list):
    """A participant's `messages` that also notes when each stroke's event was read
    (perf_counter, right after the WebSocket frame was parsed)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    def append(self, message: dict) -> None:
        if message.get("type") == "annotation" and message.get("op") == "add" and message.get("ref"):
            self.arrived.setdefault(message["ref"], time.perf_counter())
        super().append(message)


@dataclass
class Sent:
    ref: str
    sender: str
    at: float


@dataclass
class Room:
    base_url: str
    tokens: dict[str, str]
    server_pid: Optional[int] = None
    extra: dict[str, Any] = field(default_factory=dict)


# --- servers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def inproc_server(workdir: Path, processors: list[str]) -> AsyncIterator[Room]:
    from aiohttp import web

    from signalling.app import build_services, create_app
    from signalling.config import ServerConfig

    config = ServerConfig(data_dir=workdir / "data", demo_room=False, default_processors=[])
    services = build_services(config)
    runner = web.AppRunner(create_app(services))
    await runner.setup()
    config.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", config.port).start()
    try:
        await services.registry.create_room("Annotation bench", "bench", processors=processors)
        tokens = {role: services.issuer.mint(room="bench", identity=f"bench-{role}", name=role.capitalize(),
                                             role=role, ttl_s=3600) for role in ROLES}
        yield Room(f"http://127.0.0.1:{config.port}", tokens, server_pid=None)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def process_server(workdir: Path, processors: list[str]) -> AsyncIterator[Room]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = start_server("ours", port, workdir)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_healthy, proc, base)
        key = (workdir / "data" / "admin.key").read_text().strip()
        (_, tokens), = await asyncio.to_thread(make_rooms, "ours", base, key, 1, processors=tuple(processors))
        yield Room(base, dict(zip(ROLES, tokens)), server_pid=proc.pid)
    finally:
        await asyncio.to_thread(stop_process, proc)


# --- strokes ------------------------------------------------------------------------------


def screen_stroke(rng: random.Random, points: int) -> list[list[float]]:
    """A hand-drawn-looking stroke: a wavy line over about a fifth of the frame, points
    as the page keeps them (5 decimals, at least a pixel and a half apart)."""
    x0, y0 = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.8)
    phase = rng.uniform(0, math.tau)
    return [[round(x0 + 0.2 * k / points, 5), round(y0 + 0.02 * math.sin(phase + k / 6), 5)] for k in range(points)]


def face_strokes(landmarks: list[list[float]], points: int, count: int = 20) -> list[list[list[float]]]:
    """Strokes over the patient's left cheek, pinned to the face with the server's own
    anchoring (the pages do the same, see annotation-face.js)."""
    from annotate.anchoring import anchor_points

    lm = np.asarray(landmarks, dtype=np.float64)
    eye, mouth, nose = lm[263], lm[291], lm[1]
    strokes = []
    for i in range(count):
        a, b = eye + (nose - eye) * (0.1 + 0.03 * i), mouth + (nose - mouth) * (0.1 + 0.02 * i)
        line = [a + (b - a) * k / (points - 1) for k in range(points)]
        strokes.append([[t, round(u, 5), round(v, 5)] for t, u, v in anchor_points(line, lm)])
    return strokes


# --- one scenario -------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "within_100ms": None}
    array = np.asarray(values)
    return {"n": len(values), "p50": round(float(np.percentile(array, 50)), 2),
            "p95": round(float(np.percentile(array, 95)), 2), "p99": round(float(np.percentile(array, 99)), 2),
            "max": round(float(array.max()), 2), "within_100ms": round(float((array <= TARGET_MS).mean()), 4)}


def photo_track():
    import cv2
    import matplotlib.cbook

    from loadtest.sources import PhotoVideoTrack

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        photo = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    return PhotoVideoTrack(photo)


async def join_room(room: Room, media: bool) -> dict[str, SyntheticParticipant]:
    from loadtest.sources import PatternVideoTrack, ToneAudioTrack

    people: dict[str, SyntheticParticipant] = {}
    for seed, role in enumerate(("doctor", "expert", "patient")):
        video = None
        if media:
            video = photo_track() if role == "patient" else PatternVideoTrack(seed=seed)
        people[role] = SyntheticParticipant(room.base_url, room.tokens[role], audio=ToneAudioTrack() if media else None,
                                            video=video, messages=ArrivalLog())
        await people[role].join()
    if media:  # everyone receives video from both others
        for role, p in people.items():
            for other, q in people.items():
                if other != role:
                    await p.wait_for_frames(q.id, "video", 10, timeout=MEDIA_TIMEOUT_S)
    return people


async def draw(p: SyntheticParticipant, role: str, shapes: list[dict], rate: float, until: float,
               sent: list[Sent], rng: random.Random, board: dict[str, int]) -> None:
    seq = 0
    while True:
        await asyncio.sleep(rng.uniform(0.7, 1.3) / rate)
        if time.perf_counter() >= until:
            return
        seq += 1
        shape = shapes[seq % len(shapes)]
        if role == "doctor" and board["points"] > BOARD_POINTS_BEFORE_CLEAR:
            await p.send({"type": "annotate", "op": "clear"})  # the doctor moderates; not measured
            board["points"] = 0
        ref = f"{role}-{seq}"
        at = time.perf_counter()
        await p.send({"type": "annotate", "op": "add", "ref": ref, "shape": shape})
        sent.append(Sent(ref, role, at))
        board["points"] += len(shape["points"])


async def run_scenario(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    media = name == "media"
    processors = ["face-analysis"] if media else []
    server = inproc_server if args.server == "inproc" else process_server
    async with server(workdir / name, processors) as room:
        people = await join_room(room, media)
        try:
            rng = random.Random(args.seed)
            if media:
                metrics = await people["doctor"].wait_for(
                    lambda m: m.get("kind") == "face-metrics" and m.get("face"), timeout=MEDIA_TIMEOUT_S)
                shapes = [{"kind": "freehand", "anchor": "face", "points": s, "item": "toxin", "width": 4}
                          for s in face_strokes(metrics["face"]["landmarks"], args.points)]
            else:
                shapes = [{"kind": "freehand", "anchor": "screen", "points": screen_stroke(rng, args.points),
                           "item": "filler", "width": 4} for _ in range(20)]
            await asyncio.sleep(args.warmup)
            sampler = ProcessSampler(room.server_pid).start() if room.server_pid else None
            if sampler:
                sampler.mark("start")
            ticks, own_cpu, started = machine_cpu_ticks(), proc_cpu_seconds(os.getpid()), time.perf_counter()
            sent: list[Sent] = []
            board = {"points": 0}
            until = started + args.duration
            await asyncio.gather(*(draw(people[r], r, shapes, args.rate, until, sent, random.Random(f"{args.seed}{r}"),
                                        board) for r in DRAWERS))
            await asyncio.sleep(args.drain)
            elapsed = time.perf_counter() - started
            if sampler:
                sampler.mark("end")
                sampler.stop()
            usage = machine_usage(ticks, machine_cpu_ticks())
            own_share = (proc_cpu_seconds(os.getpid()) - own_cpu) / elapsed
        finally:
            await asyncio.gather(*(p.close() for p in people.values()), return_exceptions=True)

    latencies: dict[str, dict[str, list[float]]] = {s: {r: [] for r in ROLES} for s in DRAWERS}
    lost: dict[str, int] = {r: 0 for r in ROLES}
    for stroke in sent:
        for role, p in people.items():
            assert isinstance(p.messages, ArrivalLog)  # join_room gives every participant one
            arrived = p.messages.arrived.get(stroke.ref)
            if arrived is None:
                lost[role] += 1
            else:
                latencies[stroke.sender][role].append((arrived - stroke.at) * 1000)
    others = [v for s in DRAWERS for r, vs in latencies[s].items() if r != s for v in vs]
    per_pair = {f"{s}->{r}": percentiles(latencies[s][r]) for s in DRAWERS for r in ROLES if r != s}
    echo = [v for s in DRAWERS for v in latencies[s][s]]
    landmark_messages = sum(1 for m in people["patient"].messages if m.get("kind") == "face-landmarks")
    server_share = sampler.share_between("start", "end") if sampler else None  # both marks are set above
    return {
        "scenario": name, "server": args.server, "strokes_sent": len(sent), "points_per_stroke": args.points,
        "bytes_per_stroke": len(json.dumps({"type": "annotate", "op": "add", "ref": "doctor-1", "shape": shapes[0]})),
        "rate_per_drawer": args.rate, "duration_s": args.duration,
        "others": percentiles(others), "per_pair": per_pair, "sender_echo": percentiles(echo), "lost": lost,
        "patient_face_landmarks_messages": landmark_messages,
        "cpu": {"this_process_share_of_one_core": round(own_share, 3),
                "server_process_share_of_one_core": (round(server_share, 3)
                                                     if server_share is not None else None), **usage},
    }


# --- Chromium: send -> pixels on the patient page -------------------------------------------

# Patient page: note when each expected stroke's pixels first appear on the canvas over
# the preview (checked whenever the overlay redraws: it sets its data-drawn attribute).
PATIENT_DETECTOR_JS = r"""
const points = arguments[0];  // {ref: [x, y]} frame points, one per stroke, all different
const video = document.getElementById('local-video');
const canvas = document.querySelector('#self-view canvas.annotation-layer');
window.__seen = {};
// Measured at every check: the preview grows once the first mark is on it.
const where = (ref) => {
  const r = video.getBoundingClientRect();
  const cs = getComputedStyle(video);
  const k = Math.max(r.width / video.videoWidth, r.height / video.videoHeight);
  const w = video.videoWidth * k, h = video.videoHeight * k;
  const left = r.left + (r.width - w) / 2, top = r.top + (r.height - h) / 2;
  const mirrored = cs.transform !== 'none' && new DOMMatrix(cs.transform).a < 0;
  const cr = canvas.getBoundingClientRect(), ratio = canvas.width / cr.width;
  const [x, y] = points[ref];
  let cx = left + x * w;
  if (mirrored) cx = r.left + r.right - cx;
  return [Math.round((cx - cr.left) * ratio), Math.round((top + y * h - cr.top) * ratio)];
};
const ctx = canvas.getContext('2d');
const check = () => {
  const now = performance.timeOrigin + performance.now();
  for (const ref of Object.keys(points)) {
    if (window.__seen[ref]) continue;
    const [px, py] = where(ref);
    const d = ctx.getImageData(px - 2, py - 2, 5, 5).data;  // ±2 px: a pinned mark moves with landmark jitter
    for (let i = 3; i < d.length; i += 4) if (d[i] > 128) { window.__seen[ref] = now; break; }
  }
};
new MutationObserver(check).observe(canvas, {attributes: true, attributeFilter: ['data-drawn']});
"""

NOW_JS = "return performance.timeOrigin + performance.now();"


def clock_offset_ms(a, b, tries: int = 20) -> tuple[float, float]:
    """(b's clock − a's clock, ± uncertainty) in ms, from the tightest of `tries` a-b-a readings."""
    best = (0.0, math.inf)
    for _ in range(tries):
        t1, t2, t3 = a.execute_script(NOW_JS), b.execute_script(NOW_JS), a.execute_script(NOW_JS)
        if (t3 - t1) / 2 < best[1]:
            best = (t2 - (t1 + t3) / 2, (t3 - t1) / 2)
    return round(best[0], 2), round(best[1], 2)

# Doctor page: send the strokes through the page's client, as the drawing tools do on
# pointer-up, one every `interval` ms; note each one's send time under its key. Pinned
# strokes are anchored first, with the page's own anchoring and the newest landmarks
# (window.__face, kept by FACE_LISTENER_JS), as the tools anchor each point as drawn.
DOCTOR_SENDER_JS = r"""
const [strokes, interval, pinned, done] = arguments;
const client = window.consultClient;
import('/static/js/annotation-face.js').then(({anchorPoints, roundAnchor}) => {
  const sent = {};
  let i = 0;
  // The server's event for our own stroke back on this page: the round trip, for reference.
  client.addEventListener('annotations', () => {
    const now = performance.timeOrigin + performance.now();
    for (const entry of Object.values(sent)) {
      if (!entry.echo && !client.pendingAnnotations.has(entry.ref)) entry.echo = now - entry.at;
    }
  });
  const timer = setInterval(() => {
    if (i >= strokes.length) { clearInterval(timer); done(sent); return; }
    const {key, points} = strokes[i++];
    const shape = {kind: 'freehand', anchor: 'screen', points, item: 'filler', width: 4};
    const t0 = performance.timeOrigin + performance.now();
    if (pinned) {
      const face = window.__face;
      const anchors = face.landmarks && anchorPoints(points, face.landmarks, face.triangles)?.map(roundAnchor);
      if (!anchors || anchors.some((a) => !a)) return;  // off the face: not measured
      Object.assign(shape, {anchor: 'face', points: anchors});
    }
    const at = performance.timeOrigin + performance.now();
    const ref = client.annotate(shape);
    sent[key] = {ref, at, anchoring_ms: at - t0};
  }, interval);
}, (e) => done(String(e)));
"""

# Doctor page: the newest landmarks and the server's triangle table, as the page's own
# FaceTracker keeps them (installed before the patient joins: the table comes once).
FACE_LISTENER_JS = r"""
window.__face = {landmarks: null, triangles: null};
window.consultClient.addEventListener('analysis', (e) => {
  const m = e.detail;
  if (m.kind === 'face-mesh') window.__face.triangles = m.triangles;
  if (m.kind === 'face-metrics') window.__face.landmarks = m.face ? m.face.landmarks : null;
});
"""


def write_face_y4m(path: Path, centres: tuple[float, ...] = (0.5,), size: float = 0.9, seconds_each: float = 1.0,
                   width: int = 640, height: int = 480, fps: int = 15) -> Path:
    """The sample portrait as a camera clip for Chromium's fake camera (looped): `size` of
    the frame's height, centred at each of `centres` (shares of the height) in turn, for
    `seconds_each`."""
    import cv2
    import matplotlib.cbook

    sample = matplotlib.cbook.get_sample_data("grace_hopper.jpg")
    assert not isinstance(sample, np.ndarray)  # only .npy/.npz samples are loaded as arrays: a .jpg is a file
    with sample as f:
        photo = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)
    assert photo is not None  # matplotlib's bundled sample decodes
    scale = min(width / photo.shape[1], height / photo.shape[0]) * size
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = photo.shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for centre in centres:
            image = np.full((height, width, 3), 40, np.uint8)
            y0, x0 = round(centre * height - ph / 2), (width - pw) // 2
            image[y0:y0 + ph, x0:x0 + pw] = photo
            out.write((b"FRAME\n" + cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes()) * round(seconds_each * fps))
    return path


def spread_on_face(landmarks: list[list[float]], count: int) -> list[tuple[float, float]]:
    """`count` places on the face, far apart (farthest-point sampling of the mesh's
    landmarks, pulled a tenth towards its centre), so strokes there never overlap."""
    lm = np.asarray(landmarks, dtype=np.float64)[:468, :2]
    centre = lm.mean(axis=0)
    lm = centre + 0.9 * (lm - centre)
    chosen = [int(np.argmin(np.linalg.norm(lm - centre, axis=1)))]
    distance = np.linalg.norm(lm - lm[chosen[0]], axis=1)
    while len(chosen) < count:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(lm - lm[chosen[-1]], axis=1))
    return [(float(lm[i, 0]), float(lm[i, 1])) for i in chosen]


@contextlib.contextmanager
def browser_call(workdir: Path, label: str, camera: Optional[Path], need_face: bool):
    """A doctor console and a patient page (camera: Chromium's fake one, or a Y4M clip) in
    headless Chromium in a private network namespace, joined to the server as the browser
    tests run it; yields (doctor, patient) once both are in the call (and, with
    `need_face`, the doctor's page has the patient's face)."""
    from tests.browser.harness import BrowserFactory, NetNamespace, poll, start_sfu_server

    ns = NetNamespace(log_dir=workdir / f"browser-{label}-logs")
    chromium = None
    try:
        server = start_sfu_server(ns, workdir / f"browser-{label}-data")
        chromium = BrowserFactory(ns, artifact_dir=workdir / f"browser-{label}")
        doctor = chromium("doctor")
        patient = chromium("patient", extra_args=[f"--use-file-for-fake-video-capture={camera}"] if camera else [])
        doctor.set_script_timeout(600)
        patient.set_script_timeout(600)
        doctor.get(server.doctor_url)
        if not poll(lambda: doctor.execute_script("return !!window.consultClient"), 20):
            raise RuntimeError("the doctor page did not start")
        doctor.execute_script(FACE_LISTENER_JS)  # before the patient joins: the table comes once
        patient.get(server.patient_url)
        face = " && !!window.__face.landmarks && !!window.__face.triangles" if need_face else ""
        ready = poll(lambda: patient.execute_script(
            "const v = document.getElementById('local-video'); const c = window.consultClient;"
            "return v.videoWidth > 0 && c && c.joined && c.annotations.version !== null"
            " && !!document.querySelector('#self-view canvas.annotation-layer')")
            and doctor.execute_script(f"return !!(window.consultClient && window.consultClient.joined){face}"), 60)
        if not ready:
            raise RuntimeError("the pages did not join" + (" or the doctor's page found no face" if need_face else ""))
        yield doctor, patient
    finally:
        if chromium is not None:
            chromium.close()
        ns.destroy()


def browser_send_to_pixels(args: argparse.Namespace, workdir: Path, pinned: bool) -> dict[str, Any]:
    """Doctor page sends -> the stroke's pixels on the patient page. `pinned`: the patient's
    camera shows a face and the strokes are pinned to it (drawn with the landmarks the
    server sends the patient page)."""
    label = "face" if pinned else "screen"
    camera = write_face_y4m(workdir / "face.y4m") if pinned else None
    with browser_call(workdir, label, camera, need_face=pinned) as (doctor, patient):
        time.sleep(args.warmup)
        if pinned:
            places = spread_on_face(doctor.execute_script("return window.__face.landmarks"), 20)
            half = 0.006  # short strokes: they stay clear of each other on the face
        else:  # a grid inside the part of the frame the cropped preview shows
            places = [(0.32 + 0.08 * (i % 5), 0.12 + 0.1 * (i // 5)) for i in range(40)]
            half = 0.015
        results: list[float] = []
        anchoring: list[float] = []
        echoes: list[float] = []
        missing = unsent = 0
        for n in range(math.ceil(args.browser_strokes / len(places))):
            count = min(len(places), args.browser_strokes - n * len(places))
            points = {f"s{n}-{i}": places[i] for i in range(count)}
            patient.execute_script(PATIENT_DETECTOR_JS, points)
            strokes = [{"key": key, "points": [[round(x - half + half * j / 5, 5), round(y, 5)] for j in range(11)]}
                       for key, (x, y) in points.items()]
            sent = doctor.execute_async_script(DOCTOR_SENDER_JS, strokes, args.browser_interval * 1000, pinned)
            time.sleep(1.5)
            seen = patient.execute_script("return window.__seen")
            unsent += count - len(sent)
            echoes += [e["echo"] for e in sent.values() if e.get("echo")]  # done() comes an interval after the last
            for key, entry in sent.items():
                anchoring.append(entry["anchoring_ms"])
                if key in seen:
                    results.append(seen[key] - entry["at"])
                else:
                    missing += 1
            doctor.execute_script("window.consultClient.clearAnnotations()")
            time.sleep(1.0)
        offset = clock_offset_ms(doctor, patient)
    return {"anchor": label, "strokes": args.browser_strokes, "interval_s": args.browser_interval,
            "not_seen": missing, "not_sent_off_face": unsent, "send_to_pixels_ms": percentiles(results),
            "page_anchoring_ms": percentiles(anchoring) if pinned else None, "page_clock_offset_ms": offset,
            "doctor_echo_ms": percentiles(echoes)}


FOLLOW_CENTRES = (0.38, 0.60)  # the moving clip's face centre, share of the height, in turn

# Patient page, for `seconds`: when its preview shows the face move (every presented
# frame's phase, from a band the portrait covers only in the upper position), and when
# the pinned mark moves (the painted box's centre, canvas px, whenever it changes).
FOLLOW_MONITOR_JS = r"""
const [seconds, done] = arguments;
const video = document.getElementById('local-video');
const canvas = document.querySelector('#self-view canvas.annotation-layer');
const probe = new OffscreenCanvas(48, 36).getContext('2d', {willReadFrequently: true});
const frames = [], marks = [];
const end = performance.now() + seconds * 1000;
const onFrame = (now) => {
  probe.drawImage(video, 0, 0, 48, 36);
  const band = probe.getImageData(14, 5, 20, 2).data;  // x 0.3-0.7, y ~0.15 of the frame
  let differs = 0;
  for (let i = 0; i < band.length; i += 4) if (Math.abs(band[i + 1] - 40) > 25) differs++;
  frames.push([now, differs > 20 ? 0 : 1]);  // 0: face up (the portrait covers the band)
  if (now < end) video.requestVideoFrameCallback(onFrame);
};
video.requestVideoFrameCallback(onFrame);
const ctx = canvas.getContext('2d');
const onPaint = (now) => {
  const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let y0 = Infinity, y1 = -Infinity;
  for (let i = 3; i < d.length; i += 4) {
    if (d[i] <= 100) continue;
    const y = Math.floor(i / 4 / canvas.width);
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }
  const y = y1 >= y0 ? (y0 + y1) / 2 : null;
  if (y !== null && (!marks.length || marks[marks.length - 1][1] !== y)) marks.push([now, y]);
  if (now < end) requestAnimationFrame(onPaint); else done({frames, marks, height: canvas.height});
};
requestAnimationFrame(onPaint);
"""


def switches(series: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """(time, new phase) wherever the phase changes."""
    return [(t, p) for (_, q), (t, p) in zip(series, series[1:]) if p != q]


def browser_follow_lag(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """How long a pinned mark on the patient's page takes to follow the face: from the
    preview showing the face at its new height to the mark drawn there."""
    camera = write_face_y4m(workdir / "moving-face.y4m", FOLLOW_CENTRES, size=0.6, seconds_each=2.5,
                            width=480, height=360)
    with browser_call(workdir, "follow", camera, need_face=True) as (doctor, patient):
        time.sleep(args.warmup)
        for _ in range(5):  # the face may jump between reading its landmarks and pinning
            lm = np.asarray(doctor.execute_script("return window.__face.landmarks"))
            eye, mouth = lm[263], lm[291]
            stroke = [{"key": "cheek", "points": [[round(float(c), 5) for c in eye + (mouth - eye) * (0.3 + 0.05 * j)]
                                                  for j in range(9)]}]
            sent = doctor.execute_async_script(DOCTOR_SENDER_JS, stroke, 10, True)
            if "cheek" in sent:
                break
        else:
            return {"skipped": "the stroke could not be pinned"}
        time.sleep(1.0)
        seen = patient.execute_async_script(FOLLOW_MONITOR_JS, args.follow_seconds)
    frames = switches([(t, p) for t, p in seen["frames"]])
    ys = np.array([y for _, y in seen["marks"]])
    middle = (ys.min() + ys.max()) / 2 if len(ys) else 0
    marks = switches([(t, int(y > middle)) for t, y in seen["marks"]])
    lags = []
    for t, phase in frames:  # each move of the face, to the mark's next move the same way
        after = [m for m, p in marks if p == phase and m >= t - 1]
        if after and after[0] - t < 2000:
            lags.append(after[0] - t)
    return {"face_moves": len(frames), "mark_moves": len(marks), "face_to_mark_ms": percentiles(lags),
            "mark_travel_px": round(float(ys.max() - ys.min()), 1) if len(ys) else None,
            "canvas_height_px": seen["height"]}


# --- report --------------------------------------------------------------------------------


def print_report(results: list[dict[str, Any]], browser: Optional[dict[str, Any]]) -> None:
    def row(label: str, stats: dict) -> str:
        if not stats["n"]:
            return f"  {label:<22} n=0"
        return (f"  {label:<22} n={stats['n']:<5} p50 {stats['p50']:6.1f}  p95 {stats['p95']:6.1f}  "
                f"p99 {stats['p99']:6.1f}  max {stats['max']:6.1f} ms  <=100 ms: {stats['within_100ms']:.1%}")

    for r in results:
        cpu = r["cpu"]
        server = cpu["server_process_share_of_one_core"]
        print(f"\n{r['scenario']} (server {r['server']}): {r['strokes_sent']} strokes of "
              f"{r['points_per_stroke']} points ({r['bytes_per_stroke']} bytes), {r['rate_per_drawer']}/s from each "
              f"of doctor and expert; machine busy {cpu['busy_share_of_all_cores']:.0%}, this process "
              f"{cpu['this_process_share_of_one_core']:.0%} of a core"
              + (f", server {server:.0%}" if server is not None else ""))
        print(row("sent -> others (all)", r["others"]))
        for pair, stats in r["per_pair"].items():
            print(row(pair, stats))
        print(row("sent -> own echo", r["sender_echo"]))
        print(f"  not received: {r['lost']}; face-landmarks messages to the patient: "
              f"{r['patient_face_landmarks_messages']}")
    if browser and "skipped" in browser:
        print(f"\nChromium: skipped ({browser['skipped']})")
    for label, run in (browser or {}).items():
        if label == "follow":
            print("\nChromium, a pinned mark following the face on the patient page (preview shows the face moved"
                  " -> mark drawn there):")
            if "skipped" in run:
                print(f"  skipped: {run['skipped']}")
            else:
                print(row("face -> mark", run["face_to_mark_ms"]) + f"  ({run['face_moves']} face moves, "
                      f"mark travels {run['mark_travel_px']} of {run['canvas_height_px']} px)")
            continue
        if not isinstance(run, dict) or "send_to_pixels_ms" not in run:
            continue
        print(f"\nChromium, doctor page sends -> pixels on the patient page ({label} strokes):")
        offset, uncertainty = run["page_clock_offset_ms"]
        print(row("send -> pixels", run["send_to_pixels_ms"]) + f"  (not seen: {run['not_seen']}; "
              f"the pages' clocks differ by {offset:+.2f} ± {uncertainty:.2f} ms)")
        print(row("own echo on the doctor's", run["doctor_echo_ms"]))
        if run["page_anchoring_ms"]:
            print(row("anchoring on the page", run["page_anchoring_ms"])
                  + f"  (off the face, not sent: {run['not_sent_off_face']})")


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench_annotation",
                                description="Stroke latency to every other participant (target: 100 ms).")
    p.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--server", choices=("inproc", "process"), default="inproc")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of drawing per scenario")
    p.add_argument("--rate", type=float, default=2.0, help="strokes per second from each of doctor and expert")
    p.add_argument("--points", type=int, default=80, help="points per stroke (a ~1.3 s drag, as the page keeps them)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after joining (and media flowing) before drawing")
    p.add_argument("--drain", type=float, default=2.0, help="seconds to wait for late events")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--browser", action="store_true", help="also measure send -> pixels in Chromium (root)")
    p.add_argument("--browser-strokes", type=int, default=80)
    p.add_argument("--browser-interval", type=float, default=0.5, help="seconds between the doctor page's strokes")
    p.add_argument("--follow-seconds", type=float, default=20.0,
                   help="how long to watch a pinned mark follow the moving face on the patient page")
    p.add_argument("--json", type=Path, help="write every figure here")
    return p.parse_args(argv)


async def run(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    from media.ice import restrict_host_addresses

    restrict_host_addresses(["127.0.0.1"])  # every ICE candidate, ours and the server's, on loopback
    results = []
    for name in args.scenarios:
        results.append(await asyncio.wait_for(run_scenario(name, args, workdir),
                                              args.duration + args.warmup + args.drain + 3 * MEDIA_TIMEOUT_S))
    return results


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-annotation-") as tmp:
        workdir = Path(tmp)
        results = asyncio.run(run(args, workdir)) if args.scenarios else []
        browser = None
        if args.browser:
            from tests.browser.harness import missing_prerequisites

            reason = missing_prerequisites()
            browser = {"skipped": reason} if reason else {
                "screen": browser_send_to_pixels(args, workdir, pinned=False),
                "face": browser_send_to_pixels(args, workdir, pinned=True),
                "follow": browser_follow_lag(args, workdir)}
    print_report(results, browser)
    if args.json:
        args.json.write_text(json.dumps({"argv": sys.argv, "machine": machine_info(), "results": results,
                                         "browser": browser}, indent=2))
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
