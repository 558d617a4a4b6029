/**
 * The face mesh over a <video> of the patient, for the clinicians: the 478 normalised
 * landmarks of the latest `face-metrics` message (docs/PROTOCOL.md, "Analysis"; 0..1 of
 * the video frame, top-left origin) drawn as a light mesh with the features (face oval,
 * eyes, brows, lips, irises) a little stronger.
 *
 * The landmarks come at 5 Hz and lag the picture by a frame or two: the mesh shows what
 * the analysis sees, it is not a tracker. Placement uses the same picture arithmetic as
 * the annotation marks (annotation-render.js: object-fit letterboxing, mirroring).
 *
 * Test hooks on the canvas: data-points (landmarks drawn, 0 when none), data-frame ("W×H"
 * of the picture in device pixels, absent without a picture).
 */

import {VideoCanvasLayer, fitCanvasToPicture} from './annotation-render.js';
import {FEATURES, TESSELATION} from './face-mesh-edges.js';

const MESH_COLOR = 'rgba(130, 225, 255, 0.32)';
const FEATURE_COLOR = 'rgba(130, 225, 255, 0.85)';
const REF_HEIGHT = 720;  // line widths are for a 720-line picture, scaled like the marks

export class FaceMeshOverlay extends VideoCanvasLayer {
  /** The canvas fills `container` (positioned, holding the video), inserted before `before`. */
  constructor(container, {before = null} = {}) {
    super(container, 'face-mesh-layer', {before});
    this.landmarks = null;
    this.canvas.setAttribute('aria-hidden', 'true');  // the analysis panel says it in words
    this.canvas.dataset.points = '0';
  }

  /** [[x, y], …] normalised to the video frame, or null to clear. */
  setLandmarks(landmarks) {
    this.landmarks = Array.isArray(landmarks) && landmarks.length ? landmarks : null;
    this.redraw();
  }

  draw() {
    const {canvas, landmarks} = this;
    const fit = fitCanvasToPicture(canvas, this.video);
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!fit) {
      delete canvas.dataset.frame;
      canvas.dataset.points = '0';
      return;
    }
    const {frame, mirror} = fit;
    canvas.dataset.frame = `${Math.round(frame.width)}×${Math.round(frame.height)}`;
    if (!landmarks) {
      canvas.dataset.points = '0';
      return;
    }
    const flip = mirror === null ? (x) => x : (x) => mirror - x;
    const xs = new Float64Array(landmarks.length);
    const ys = new Float64Array(landmarks.length);
    landmarks.forEach((point, i) => {
      xs[i] = flip(frame.x + point[0] * frame.width);
      ys[i] = frame.y + point[1] * frame.height;
    });
    const scale = frame.height / REF_HEIGHT;
    const left = mirror === null ? frame.x : mirror - frame.x - frame.width;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, frame.y, frame.width, frame.height);
    ctx.clip();  // nothing on the letterbox bars
    ctx.lineJoin = 'round';
    ctx.lineCap = 'round';
    strokeEdges(ctx, TESSELATION, xs, ys, MESH_COLOR, Math.max(0.75, 1 * scale));
    strokeEdges(ctx, FEATURES, xs, ys, FEATURE_COLOR, Math.max(1, 1.75 * scale));
    ctx.restore();
    canvas.dataset.points = String(landmarks.length);
  }
}

function strokeEdges(ctx, edges, xs, ys, color, width) {
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  for (let i = 0; i < edges.length; i += 2) {
    const a = edges[i];
    const b = edges[i + 1];
    if (a >= xs.length || b >= xs.length) continue;  // a mesh without the irises
    ctx.moveTo(xs[a], ys[a]);
    ctx.lineTo(xs[b], ys[b]);
  }
  ctx.stroke();
}
