/**
 * Face-anchored marks on the live pages: anchoring a drawn point to the face mesh, and
 * resolving anchors against the newest landmarks so the marks follow the face.
 *
 * annotate/anchoring.py is the reference; this is its 2-D path ((N, 2) landmarks, all a
 * page has) step for step, so a page and the server pick the same triangle and weights:
 * a point P gets the triangle t whose smallest barycentric weight is largest (the
 * containing one when there is one, else the least extrapolated), u and v solving
 * P = A + u·(B − A) + v·(C − A); collapsed triangles (|2·area| ≤ 1e-12) are never
 * chosen; a point whose best smallest weight is below −MAX_EXTRAPOLATION is off the
 * face (the server's OffFaceError): the whole shape then stays screen-anchored.
 *
 * The triangle table is never copied into the page: the server sends its own
 * (annotate/face_relay.py, `face-mesh`) before the first landmarks. Landmarks come with
 * the `face-analysis` processor's messages (docs/PROTOCOL.md): all 478 in `face-metrics`
 * (consoles), only those the board's face marks use in `face-landmarks` (the patient).
 * They arrive at 5 Hz and lag the picture by the analysis' delay, so a mark trails a
 * moving face by that much and settles on it when the face holds still.
 */

import {LIMITS} from './annotation-board.js';

export const MESH_LANDMARKS = 468;     // annotate/anchoring.py: the tesselation's landmarks
export const MAX_EXTRAPOLATION = 1.5;  // annotate/limits.py
export const FACE_TRIANGLE_COUNT = 852;  // annotate/limits.py
const DEGENERATE = 1e-12;
// Landmarks older than this are not the face on screen any more (they come at 5 Hz):
// face marks are then hidden, as the export leaves them out of frames without a face.
export const FACE_STALE_MS = 1_000;
// A face reported missing is taken as lost only once it has been missing this long: the
// detector misses single frames (motion blur, a keyframe), and marks (and the console's
// "Pin to face") should not blink for one of them.
export const FACE_LOST_GRACE_MS = 500;
const POINT_FIELDS = {circle: ['center', 'edge'], arrow: ['from', 'to'], text: ['at']};

// Per landmark set: the triangles' corners and edge vectors, computed once for all the
// points of a drag (the console anchors every pointer move against the same set).
const prepared = new WeakMap();

function prepare(landmarks, triangles) {
  let table = prepared.get(landmarks);
  if (table?.triangles === triangles) return table;
  const n = triangles.length;
  table = {triangles, ax: new Float64Array(n), ay: new Float64Array(n), e1x: new Float64Array(n),
           e1y: new Float64Array(n), e2x: new Float64Array(n), e2y: new Float64Array(n),
           det: new Float64Array(n), usable: new Uint8Array(n)};
  for (let k = 0; k < n; k += 1) {
    const [a, b, c] = triangles[k].map((i) => landmarks[i]);
    if (!a || !b || !c) continue;  // not usable
    const e1x = b[0] - a[0];
    const e1y = b[1] - a[1];
    const e2x = c[0] - a[0];
    const e2y = c[1] - a[1];
    const det = e1x * e2y - e1y * e2x;
    table.ax[k] = a[0];
    table.ay[k] = a[1];
    table.e1x[k] = e1x;
    table.e1y[k] = e1y;
    table.e2x[k] = e2x;
    table.e2y[k] = e2y;
    table.usable[k] = Math.abs(det) > DEGENERATE ? 1 : 0;
    table.det[k] = table.usable[k] ? det : 1;
  }
  prepared.set(landmarks, table);
  return table;
}

/**
 * Face anchors [t, u, v] for normalised [x, y] points, or null when any point is off the
 * face (or there is no usable mesh): the caller keeps the shape screen-anchored then.
 */
export function anchorPoints(points, landmarks, triangles) {
  if (!Array.isArray(landmarks) || landmarks.length < MESH_LANDMARKS || !Array.isArray(triangles)) return null;
  const m = prepare(landmarks, triangles);
  const anchors = [];
  for (const [x, y] of points) {
    let best = -Infinity;
    let choice = -1;
    let bu = 0;
    let bv = 0;
    for (let k = 0; k < triangles.length; k += 1) {
      if (!m.usable[k]) continue;
      const dx = x - m.ax[k];
      const dy = y - m.ay[k];
      const u = (dx * m.e2y[k] - dy * m.e2x[k]) / m.det[k];
      const v = (m.e1x[k] * dy - m.e1y[k] * dx) / m.det[k];
      const least = Math.min(Math.min(1 - u - v, u), v);
      if (least > best) {  // strictly: the first of equals, like numpy's argmax
        best = least;
        choice = k;
        bu = u;
        bv = v;
      }
    }
    if (choice < 0 || best < -MAX_EXTRAPOLATION) return null;
    anchors.push([choice, bu, bv]);
  }
  return anchors;
}

/** An anchor as it is sent: weights at the server's precision. Null if the rounding took
 *  it past the extrapolation limit (the server would refuse it as out_of_range). */
export function roundAnchor([t, u, v]) {
  const scale = 10 ** LIMITS.coordDecimals;
  const [ru, rv] = [Math.round(u * scale) / scale, Math.round(v * scale) / scale];
  return Math.min(1 - ru - rv, ru, rv) < -MAX_EXTRAPOLATION ? null : [t, ru, rv];
}

/** The normalised point of anchor [t, u, v], or null when a corner landmark is missing. */
export function resolvePoint(anchor, landmarks, triangles) {
  const [t, u, v] = anchor;
  const corners = triangles?.[t];
  if (!corners || !landmarks) return null;
  const a = landmarks[corners[0]];
  const b = landmarks[corners[1]];
  const c = landmarks[corners[2]];
  if (!a || !b || !c) return null;
  return [a[0] + u * (b[0] - a[0]) + v * (c[0] - a[0]), a[1] + u * (b[1] - a[1]) + v * (c[1] - a[1])];
}

/** A face-anchored shape as a screen-anchored copy at the face's current place, or null. */
export function resolveShape(shape, landmarks, triangles) {
  const out = {...shape, anchor: 'screen'};
  const names = shape.kind === 'freehand' ? null : POINT_FIELDS[shape.kind];
  if (names === undefined) return null;  // a kind from a newer server
  if (names === null) {
    out.points = [];
    for (const anchor of shape.points ?? []) {
      const point = resolvePoint(anchor, landmarks, triangles);
      if (!point) return null;
      out.points.push(point);
    }
    return out.points.length ? out : null;
  }
  for (const name of names) {
    out[name] = resolvePoint(shape[name], landmarks, triangles);
    if (!out[name]) return null;
  }
  return out;
}

function validTriangles(triangles) {
  return Array.isArray(triangles) && triangles.length === FACE_TRIANGLE_COUNT
    && triangles.every((t) => Array.isArray(t) && t.length === 3 && t.every((i) => Number.isInteger(i) && i >= 0));
}

function isPoint(p) {
  return Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]);
}

/**
 * The newest face of each analysed participant, from the client's `analysis` events.
 * `face(participantId)` is {landmarks, triangles, tMs} while fresh, with landmarks null
 * when no face was found, or null when nothing recent is known (or no triangle table
 * yet). `landmarks` is indexed by landmark number (sparse from `face-landmarks`).
 * Fires `change` on every update, and when the newest goes stale.
 */
export class FaceTracker extends EventTarget {
  constructor(client, {staleMs = FACE_STALE_MS, lostGraceMs = FACE_LOST_GRACE_MS} = {}) {
    super();
    this.staleMs = staleMs;
    this.lostGraceMs = lostGraceMs;
    this.triangles = null;
    this._faces = new Map();  // participant id -> {landmarks, tMs, at (their arrival), heard (newest message)}
    this._staleTimer = 0;
    client.addEventListener('analysis', (event) => this._onMessage(event.detail));
    client.addEventListener('statechange', () => {
      if (client.state === 'closed') this._forget();
    });
  }

  face(participantId) {
    const entry = participantId ? this._faces.get(participantId) : null;
    if (!entry || !this.triangles || performance.now() - entry.heard > this.staleMs) return null;
    return {landmarks: entry.landmarks, triangles: this.triangles, tMs: entry.tMs};
  }

  _onMessage(msg) {
    if (msg?.type !== 'analysis' || typeof msg.participant !== 'string') return;
    if (msg.kind === 'face-mesh') {
      if (!validTriangles(msg.triangles)) return;
      this.triangles = msg.triangles;
    } else if (msg.kind === 'face-metrics') {
      const points = msg.face?.landmarks;
      this._set(msg, Array.isArray(points) && points.length >= MESH_LANDMARKS && points.every(isPoint) ? points : null);
    } else if (msg.kind === 'face-landmarks') {
      let sparse = null;
      if (Array.isArray(msg.landmarks)) {
        sparse = [];
        for (const item of msg.landmarks) {
          if (Array.isArray(item) && Number.isInteger(item[0]) && item[0] >= 0 && item[0] < 1000
              && isPoint(item.slice(1))) {
            sparse[item[0]] = [item[1], item[2]];
          }
        }
      }
      this._set(msg, sparse);
    } else {
      return;
    }
    this.dispatchEvent(new Event('change'));
  }

  _set(msg, landmarks) {
    const now = performance.now();
    const previous = this._faces.get(msg.participant);
    if (!landmarks && previous?.landmarks && now - previous.at < this.lostGraceMs) {
      previous.heard = now;  // missing for a moment: the last face stands
    } else {
      this._faces.set(msg.participant, {landmarks, tMs: msg.t_ms ?? null, at: now, heard: now});
    }
    // Say so when this goes stale without a newer one (the video stopped, the marks went).
    clearTimeout(this._staleTimer);
    this._staleTimer = setTimeout(() => this.dispatchEvent(new Event('change')), this.staleMs + 20);
  }

  _forget() {
    clearTimeout(this._staleTimer);
    this._faces.clear();
    this.dispatchEvent(new Event('change'));
  }
}
