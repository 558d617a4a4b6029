/**
 * The room's live watermark as the page shows it (the room's `live_watermark`, sent in
 * `joined`; signalling/live_watermark.py):
 *
 * - "page": over every remote video, this viewer's name, identity and the time (UTC),
 *   semi-transparent and drifting slowly along the same path as the server's burned-in
 *   label (watermark/embed.py drift_position), so a screen recording
 *   shows who made it. It is drawn by this page, not in the picture: it deters casual
 *   recording, but anyone who edits the page or takes the stream out of the browser has
 *   clean video. Rooms that must be able to trace a leak use "server".
 * - "server": the marks are already in the picture; the page only says so.
 * - "off": nothing.
 *
 * Every page of a watermarked room shows a notice that the video is watermarked.
 *
 * Test hooks: canvas.viewer-mark-layer[data-label] (the text drawn, absent when nothing
 * is) and [data-at] ("x,y" of the label in picture fractions); #viewer-mark-notice
 * [data-mode].
 */

import {VideoCanvasLayer, fitCanvasToPicture} from './annotation-render.js';
import {onLanguageChange, t} from './i18n.js';

const PERIOD_S = 90;            // one lap of the drift path, as on the server
const OPACITY = 0.5;
const FONT_PX_AT_720 = 30;      // label height relative to the picture, as on the server
const REDRAW_MS = 250;          // the label moves at most ~1 % of the picture per redraw

const NOTICES = {  // catalogue keys
  page: 'watermark.notice.page',
  server: 'watermark.notice.server',
};

/** Top-left of the label as fractions of the free area, t in seconds (watermark/embed.py drift_position). */
export function driftPosition(t) {
  const phase = (2 * Math.PI * t) / PERIOD_S;
  return [0.5 + 0.5 * Math.sin(3 * phase + 0.7), 0.5 + 0.5 * Math.sin(2 * phase)];
}

function utcMinute(date) {
  return `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`;
}

class ViewerMarkLayer extends VideoCanvasLayer {
  constructor(tile, text) {
    super(tile, 'viewer-mark-layer', {before: tile.querySelector('.tile-placeholder')});
    this.tile = tile;
    this._text = text;
    Object.assign(this.canvas.style, {
      position: 'absolute', inset: '0', width: '100%', height: '100%', pointerEvents: 'none',
    });
    this.canvas.setAttribute('aria-hidden', 'true');
  }

  draw() {
    const {canvas} = this;
    const fit = fitCanvasToPicture(canvas, this.video);
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!fit || this.tile.classList.contains('camera-off')) {
      delete canvas.dataset.label;
      return;
    }
    const {frame} = fit;
    // The part of the picture on screen (a cover-fitted video is cropped by its box).
    const left = Math.max(frame.x, 0);
    const top = Math.max(frame.y, 0);
    const shown = {
      x: left, y: top,
      width: Math.min(frame.x + frame.width, canvas.width) - left,
      height: Math.min(frame.y + frame.height, canvas.height) - top,
    };
    if (shown.width <= 0 || shown.height <= 0) {
      delete canvas.dataset.label;
      return;
    }
    const text = this._text();
    const size = Math.max(10, Math.round((FONT_PX_AT_720 * frame.height) / 720));
    ctx.font = `${size}px "DejaVu Sans", sans-serif`;
    const width = Math.min(ctx.measureText(text).width, shown.width);
    const [fx, fy] = driftPosition(Date.now() / 1000);
    const x = shown.x + fx * Math.max(0, shown.width - width);
    const y = shown.y + fy * Math.max(0, shown.height - size * 1.3);
    ctx.save();
    ctx.beginPath();
    ctx.rect(shown.x, shown.y, shown.width, shown.height);
    ctx.clip();
    ctx.globalAlpha = OPACITY;
    ctx.textBaseline = 'top';
    ctx.lineJoin = 'round';
    ctx.lineWidth = Math.max(2, size / 8);
    ctx.strokeStyle = 'rgb(20, 20, 20)';  // a dark ring: legible on light skin
    ctx.strokeText(text, x, y, shown.width);
    ctx.fillStyle = 'white';
    ctx.fillText(text, x, y, shown.width);
    ctx.restore();
    canvas.dataset.label = text;
    canvas.dataset.at = `${fx.toFixed(3)},${fy.toFixed(3)}`;
  }
}

/**
 * Watermarks every remote video in `container` (the RemoteMediaView's element) while the
 * room asks for it, and shows the notice in the `corner` ('left' or 'right') at the top of
 * the container's parent (positioned). Follows tiles and videos as they come and go.
 */
export function bindViewerMark(client, container, {corner = 'right'} = {}) {
  const layers = new Map();  // tile -> ViewerMarkLayer
  const notice = document.createElement('p');
  notice.id = 'viewer-mark-notice';
  notice.setAttribute('role', 'status');
  notice.hidden = true;
  Object.assign(notice.style, {
    position: 'absolute', top: '0.5rem', [corner]: '0.5rem', margin: '0', zIndex: '5', maxWidth: '60%',
    padding: '0.25rem 0.6rem', borderRadius: '0.75rem', fontSize: '0.8rem', lineHeight: '1.3',
    background: 'rgba(0, 0, 0, 0.6)', color: '#fff', pointerEvents: 'none',
  });
  container.parentElement.append(notice);

  const mode = () => client.room?.live_watermark ?? 'off';
  const text = () => {
    const self = client.self ?? {};
    const who = self.name && self.identity && self.name !== self.identity ? `${self.name} (${self.identity})`
      : (self.name ?? self.identity ?? '');
    return `${who} \u00b7 ${utcMinute(new Date())}`;
  };

  const sync = () => {
    const current = mode();
    notice.hidden = !(current in NOTICES);
    notice.dataset.mode = current;
    notice.textContent = current in NOTICES ? t(NOTICES[current]) : '';
    const wanted = new Set(current === 'page' ? container.querySelectorAll('video.remote-video') : []);
    for (const [tile, layer] of layers) {
      if (!tile.isConnected || !wanted.has(layer.video)) {
        layer.destroy();
        layers.delete(tile);
      }
    }
    for (const video of wanted) {
      const tile = video.parentElement;
      let layer = layers.get(tile);
      if (!layer) {
        layer = new ViewerMarkLayer(tile, text);
        layers.set(tile, layer);
      }
      layer.setVideo(video);
    }
  };

  new MutationObserver(sync).observe(container, {childList: true, subtree: true});
  client.addEventListener('participants', sync);
  onLanguageChange(sync);
  setInterval(() => {
    for (const layer of layers.values()) layer.redraw();
  }, REDRAW_MS);
  sync();
}
