/**
 * Draws the annotation board over a <video> of the patient, following the drawing
 * spec in annotate/render.py (the server's export renderer), so a mark looks the same
 * live as in an export:
 *
 *   W × H is the video picture as displayed, in device pixels, without letterbox bars
 *   (object-fit and object-position are taken into account: `contain` leaves bars that
 *   are not drawn on, `cover` crops the picture and the marks with it); s = H / 720.
 *   Stroke width w·s, round caps and joins; a single-point stroke is a dot; circles by
 *   centre and rim point; arrows with a filled head; text in DejaVu Sans at 20·s px on
 *   a box of black at 60 %. Later shapes on top.
 *
 * A video shown mirrored (CSS transform scaleX(-1), the front-camera self-view) gets
 * its marks mirrored the same way, so they cover the same spot of the picture; text
 * stays readable (its box is mirrored, its glyphs are not).
 *
 * Face-anchored marks are drawn where the newest face landmarks put them (resolved by
 * annotation-face.js, as the export resolves them with each frame's landmarks) and left
 * out while no face is known, as the export leaves them out of frames without a face.
 */

import {shapeColor} from './annotation-board.js';
import {resolveShape} from './annotation-face.js';

const REF_HEIGHT = 720;
const FONT_REF_PX = 20;
const TEXT_PAD = 0.3;           // × font size
const TEXT_BOX_HEIGHT = 1.2;    // × font size, plus the padding
const TEXT_BASELINE = 0.93;     // × font size below the padding: DejaVu Sans' ascender
const TEXT_BOX_COLOR = 'rgba(0, 0, 0, 0.6)';
const ARROW_HEAD_REF = 10;      // head length = (ARROW_HEAD_REF + ARROW_HEAD_PER_WIDTH · w) · s
const ARROW_HEAD_PER_WIDTH = 3;
const ARROW_HALF_ANGLE_TAN = Math.tan((25 * Math.PI) / 180);
// The web font is declared in common.css (a Latin subset of matplotlib's DejaVu Sans,
// the font the export uses); anything it lacks falls back to the system sans-serif.
const FONT_FAMILY = '"DejaVu Sans", sans-serif';

function font(sizePx) {
  return `${sizePx}px ${FONT_FAMILY}`;
}

/**
 * Draws `shapes` into `ctx` and returns how many were drawn.
 * frame: the picture in canvas pixels, {x, y, width, height} (it may reach beyond the
 * canvas when the video is cropped); mirror: null, or the sum of the left and right
 * edges (canvas pixels) of the box the picture is mirrored within; face: null, or
 * {landmarks, triangles} of the picture's face (annotation-face.js) to draw the
 * face-anchored shapes with (without it they are skipped); stats: null, or an object
 * whose `face` is increased by the face-anchored shapes drawn.
 */
export function drawShapes(ctx, shapes, frame, {mirror = null, face = null, stats = null} = {}) {
  const scale = frame.height / REF_HEIGHT;
  const flip = mirror === null ? (x) => x : (x) => mirror - x;
  const toPx = ([x, y]) => [flip(frame.x + x * frame.width), frame.y + y * frame.height];
  const left = mirror === null ? frame.x : mirror - frame.x - frame.width;
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, frame.y, frame.width, frame.height);
  ctx.clip();  // nothing on the letterbox bars, like the export's frame edge
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  let drawn = 0;
  for (let shape of shapes) {
    const onFace = (shape.anchor ?? 'screen') !== 'screen';
    if (onFace) {
      // [triangle, u, v] on the face mesh: where the face is now, if it is known.
      shape = face?.landmarks ? resolveShape(shape, face.landmarks, face.triangles) : null;
      if (!shape) continue;
    }
    const color = shapeColor(shape);
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    if (shape.kind === 'text') {
      drawText(ctx, shape, frame, scale, left, mirror !== null, color);
    } else if (shape.kind === 'freehand') {
      drawStroke(ctx, shape.points.map(toPx), shape.width * scale);
    } else if (shape.kind === 'circle') {
      const [c, e] = [toPx(shape.center), toPx(shape.edge)];
      ctx.lineWidth = shape.width * scale;
      ctx.beginPath();
      ctx.arc(c[0], c[1], Math.hypot(e[0] - c[0], e[1] - c[1]), 0, 2 * Math.PI);
      ctx.stroke();
    } else if (shape.kind === 'arrow') {
      drawArrow(ctx, toPx(shape.from), toPx(shape.to), shape.width, scale);
    } else {
      continue;  // a kind from a newer server
    }
    drawn += 1;
    if (onFace && stats) stats.face += 1;
  }
  ctx.restore();
  return drawn;
}

function drawStroke(ctx, points, width) {
  if (points.length === 0) return;
  const [x0, y0] = points[0];
  if (points.every(([x, y]) => x === x0 && y === y0)) {
    // A single point is a dot of the stroke's diameter.
    ctx.beginPath();
    ctx.arc(x0, y0, width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.lineWidth = width;
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function drawArrow(ctx, tail, tip, width, scale) {
  const length = Math.hypot(tip[0] - tail[0], tip[1] - tail[1]);
  if (length === 0) return;
  const d = [(tip[0] - tail[0]) / length, (tip[1] - tail[1]) / length];
  const n = [-d[1], d[0]];
  const head = Math.min((ARROW_HEAD_REF + ARROW_HEAD_PER_WIDTH * width) * scale, length / 2);
  const base = [tip[0] - head * d[0], tip[1] - head * d[1]];
  const half = head * ARROW_HALF_ANGLE_TAN;
  ctx.lineWidth = width * scale;
  ctx.beginPath();
  ctx.moveTo(tail[0], tail[1]);
  ctx.lineTo(base[0], base[1]);
  ctx.stroke();
  ctx.beginPath();
  ctx.moveTo(tip[0], tip[1]);
  ctx.lineTo(base[0] + half * n[0], base[1] + half * n[1]);
  ctx.lineTo(base[0] - half * n[0], base[1] - half * n[1]);
  ctx.closePath();
  ctx.fill();
}

function drawText(ctx, shape, frame, scale, frameLeft, mirrored, color) {
  const size = FONT_REF_PX * scale;
  const pad = Math.round(TEXT_PAD * size);
  ctx.font = font(size);
  const boxW = Math.ceil(ctx.measureText(shape.text).width) + 2 * pad;
  const boxH = Math.round(TEXT_BOX_HEIGHT * size) + 2 * pad;
  // Top-left corner at `at`, moved inside the frame (in the frame's own orientation).
  const fw = Math.round(frame.width);
  const fh = Math.round(frame.height);
  let x = Math.max(0, Math.min(Math.round(shape.at[0] * frame.width), fw - boxW));
  const y = Math.max(0, Math.min(Math.round(shape.at[1] * frame.height), fh - boxH));
  // Mirrored, the box covers the mirror image of its spot; text wider than the frame
  // still starts at the frame's left, so it is cut at the right as the spec says.
  if (mirrored) x = boxW > fw ? 0 : fw - x - boxW;
  const left = Math.round(frameLeft + x);
  const top = Math.round(frame.y + y);
  ctx.fillStyle = TEXT_BOX_COLOR;
  ctx.fillRect(left, top, boxW, boxH);
  ctx.fillStyle = color;
  ctx.textBaseline = 'alphabetic';
  ctx.fillText(shape.text, left + pad, top + pad + TEXT_BASELINE * size);
}

// ---- where the picture is ---------------------------------------------------------

function objectPositionOffset(token, free) {
  if (token?.endsWith('%')) return (free * parseFloat(token)) / 100;
  if (token?.endsWith('px')) return parseFloat(token);
  return free / 2;
}

/**
 * Where `video`'s picture is on the page: {left, top, width, height} in client (CSS)
 * pixels, after object-fit and object-position, plus `mirrorSum` (left + right edge of
 * the element's box when it is shown mirrored, else null). Null while the video has
 * no picture size or no box.
 */
export function pictureRect(video) {
  const vw = video?.videoWidth;
  const vh = video?.videoHeight;
  if (!vw || !vh) return null;
  const box = video.getBoundingClientRect();  // scaleX(-1) about the centre keeps the box
  const style = getComputedStyle(video);
  const px = (name) => parseFloat(style[name]) || 0;
  const cx = box.left + px('borderLeftWidth') + px('paddingLeft');
  const cy = box.top + px('borderTopWidth') + px('paddingTop');
  const cw = box.width - px('borderLeftWidth') - px('paddingLeft') - px('paddingRight') - px('borderRightWidth');
  const ch = box.height - px('borderTopWidth') - px('paddingTop') - px('paddingBottom') - px('borderBottomWidth');
  if (cw <= 0 || ch <= 0) return null;
  const contain = Math.min(cw / vw, ch / vh);
  let width;
  let height;
  switch (style.objectFit) {
    case 'contain': [width, height] = [vw * contain, vh * contain]; break;
    case 'cover': {
      const cover = Math.max(cw / vw, ch / vh);
      [width, height] = [vw * cover, vh * cover];
      break;
    }
    case 'none': [width, height] = [vw, vh]; break;
    case 'scale-down': [width, height] = [vw * Math.min(1, contain), vh * Math.min(1, contain)]; break;
    default: [width, height] = [cw, ch];  // fill
  }
  const [posX, posY] = style.objectPosition.split(/\s+/);
  const left = cx + objectPositionOffset(posX, cw - width);
  const top = cy + objectPositionOffset(posY, ch - height);
  let mirrorSum = null;
  if (style.transform && style.transform !== 'none' && new DOMMatrixReadOnly(style.transform).a < 0) {
    mirrorSum = 2 * box.left + box.width;
  }
  return {left, top, width, height, mirrorSum};
}

/**
 * Sizes `canvas` to its box in device pixels (which clears it when the size changes) and
 * returns where `video`'s picture is on it, in canvas pixels: {frame: {x, y, width,
 * height}, mirror} as drawShapes takes them, or null while there is no picture. The
 * canvas must lie over the video (e.g. both filling the same positioned container).
 */
export function fitCanvasToPicture(canvas, video) {
  const rect = canvas.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(rect.width * ratio);
  const height = Math.round(rect.height * ratio);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;  // also clears it
    canvas.height = height;
  }
  const picture = rect.width > 0 ? pictureRect(video) : null;
  if (!picture) return null;
  const k = canvas.width / rect.width;  // CSS → canvas pixels
  return {
    frame: {
      x: (picture.left - rect.left) * k,
      y: (picture.top - rect.top) * k,
      width: picture.width * k,
      height: picture.height * k,
    },
    mirror: picture.mirrorSum === null ? null : (picture.mirrorSum - 2 * rect.left) * k,
  };
}

// ---- a canvas over the patient's video --------------------------------------------------

/**
 * The plumbing every overlay shares: a canvas that fills `container` (positioned, holding
 * the video), inserted before `before`, redrawn (once per animation frame, however many
 * times asked) whenever the canvas, the video element, the picture or the window changes
 * size (a window resize covers a change of devicePixelRatio), and following the video
 * element when it is replaced (e.g. after a reconnect). Subclasses implement draw().
 */
export class VideoCanvasLayer {
  constructor(container, className, {before = null} = {}) {
    this.container = container;
    this.video = null;
    this._frameRequest = 0;
    this.canvas = document.createElement('canvas');
    this.canvas.className = className;
    container.insertBefore(this.canvas, before);
    this._onChange = () => this.redraw();
    this._resizeObserver = new ResizeObserver(this._onChange);
    this._resizeObserver.observe(this.canvas);
    window.addEventListener('resize', this._onChange);
  }

  /** The video the drawing belongs to. */
  setVideo(video) {
    if (video === this.video) return;
    if (this.video) {
      this._resizeObserver.unobserve(this.video);
      for (const type of ['resize', 'loadedmetadata']) this.video.removeEventListener(type, this._onChange);
    }
    this.video = video ?? null;
    if (this.video) {
      this._resizeObserver.observe(this.video);
      // `resize`: the picture's own size changed (another camera, a new resolution).
      for (const type of ['resize', 'loadedmetadata']) this.video.addEventListener(type, this._onChange);
    }
    this.redraw();
  }

  /** Draws at the next animation frame (several requests make one drawing). */
  redraw() {
    if (this._frameRequest) return;
    this._frameRequest = requestAnimationFrame(() => {
      this._frameRequest = 0;
      this.draw();
    });
  }

  draw() {
    throw new Error('a VideoCanvasLayer subclass draws');
  }

  destroy() {
    cancelAnimationFrame(this._frameRequest);
    this._resizeObserver.disconnect();
    window.removeEventListener('resize', this._onChange);
    this.setVideo(null);
    this.canvas.remove();
  }
}

// ---- the overlay --------------------------------------------------------------------

/**
 * A canvas over a <video> of the patient that draws `shapes()` per the spec, again
 * whenever asked (redraw), the element or picture changes size, or the window does
 * (which covers a change of devicePixelRatio). The canvas fills `container`, which
 * must be positioned and hold the video.
 *
 * `face()`, if given, returns the picture's newest face ({landmarks, triangles, tMs} from
 * annotation-face.js' FaceTracker, or null) for the face-anchored shapes; call redraw()
 * when it changes.
 *
 * Test hooks on the canvas: data-shapes (shapes given), data-drawn (drawn: face-
 * anchored ones without a face are skipped), data-face-drawn (face-anchored ones drawn),
 * data-face ("t_ms" of the landmarks they were drawn with, "none" without a face; absent
 * when there is no face-anchored shape), data-frame ("W×H" of the picture in device
 * pixels).
 */
export class AnnotationOverlay extends VideoCanvasLayer {
  constructor(container, {shapes, label = (n) => `${n} marks on the picture`, before = null, face = null}) {
    super(container, 'annotation-layer', {before});
    this._shapes = shapes;
    this._face = face;
    this._label = label;
    this._fontWanted = false;
    this.canvas.setAttribute('role', 'img');
    this.canvas.dataset.shapes = '0';
    this.canvas.dataset.drawn = '0';
    this.redraw();
  }

  draw() {
    const {canvas} = this;
    const fit = fitCanvasToPicture(canvas, this.video);
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const shapes = [...this._shapes()];
    const faceShapes = shapes.filter((s) => (s.anchor ?? 'screen') !== 'screen');
    const face = faceShapes.length && this._face ? this._face() : null;
    let drawn = 0;
    let faceDrawn = 0;
    if (fit) {
      const {frame, mirror} = fit;
      this._loadFontFor(shapes);
      const stats = {face: 0};
      drawn = drawShapes(ctx, shapes, frame, {mirror, face, stats});
      faceDrawn = stats.face;
      canvas.dataset.frame = `${Math.round(frame.width)}×${Math.round(frame.height)}`;
    } else {
      delete canvas.dataset.frame;
    }
    canvas.dataset.shapes = String(shapes.length);
    canvas.dataset.drawn = String(drawn);
    canvas.dataset.faceDrawn = String(faceDrawn);
    if (!faceShapes.length) delete canvas.dataset.face;
    else canvas.dataset.face = face?.landmarks ? String(face.tMs) : 'none';
    canvas.setAttribute('aria-label', this._label(shapes.length));
  }

  /**
   * The normalised frame point [x, y] under a client position, or null when it is off
   * the picture (or there is none). With `clamp`, a point off the picture is moved to
   * its edge instead (a stroke dragged past the edge).
   */
  toFrame(clientX, clientY, {clamp = false} = {}) {
    const picture = pictureRect(this.video);
    if (!picture) return null;
    const x0 = picture.mirrorSum === null ? clientX : picture.mirrorSum - clientX;
    const x = (x0 - picture.left) / picture.width;
    const y = (clientY - picture.top) / picture.height;
    if (clamp) return [Math.min(1, Math.max(0, x)), Math.min(1, Math.max(0, y))];
    return x >= 0 && x <= 1 && y >= 0 && y <= 1 ? [x, y] : null;
  }

  /** Picture pixels per unit of normalised coordinates (CSS px), for distance checks. */
  pictureSize() {
    const picture = pictureRect(this.video);
    return picture ? {width: picture.width, height: picture.height} : null;
  }

  // Text is measured and drawn in the web font once it is there: ask for it the first
  // time a label shows up and draw again when it has loaded (until then the fallback).
  _loadFontFor(shapes) {
    if (this._fontWanted || !document.fonts || !shapes.some((s) => s.kind === 'text')) return;
    this._fontWanted = true;
    if (document.fonts.check(font(FONT_REF_PX))) return;
    document.fonts.load(font(FONT_REF_PX)).then(() => this.redraw(), () => {});
  }
}
