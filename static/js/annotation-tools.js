/**
 * Annotation on the pages: the marks over the patient's video, and on the console, for
 * participants with the `annotate` permission, a toolbar and pointer/touch drawing.
 *
 * Drawing: a pointer drag on the overlay makes a freehand stroke, a circle (centre,
 * then rim) or an arrow (tail, then tip); a tap with the text tool opens a text field
 * there. The shape in progress is drawn locally as it is dragged; once released it is
 * sent (`annotate` op `add` with a `ref`) and shown from client.pendingAnnotations until
 * the server's event with that ref puts it on the board.
 *
 * Pin to face (on by default, usable while the patient's face is known): each point is
 * anchored to the face mesh (annotation-face.js) with the newest landmarks as it is
 * drawn, and the shape is sent face-anchored, so it follows the face on every page and
 * in the export. A shape with a point off the face, or drawn while the face was lost,
 * is sent screen-anchored instead (the server's OffFaceError rule) and the toolbar says
 * so. Every page draws face-anchored marks where the newest landmarks put them.
 */

import {DEFAULT_ITEM, LIMITS, PALETTE, coord} from './annotation-board.js';
import {FaceTracker, anchorPoints, roundAnchor} from './annotation-face.js';
import {AnnotationOverlay} from './annotation-render.js';
import {applyTranslations, onLanguageChange, t, tn} from './i18n.js';
import {icon} from './icons.js';

// Labels are catalogue keys (i18n/locales).
const TOOLS = [
  {id: 'freehand', label: 'annotation.tool.freehand', icon: 'pen'},
  {id: 'circle', label: 'annotation.tool.circle', icon: 'circle'},
  {id: 'arrow', label: 'annotation.tool.arrow', icon: 'arrow'},
  {id: 'text', label: 'annotation.tool.text', icon: 'text'},
];
const ITEM_LABELS = {
  toxin: 'annotation.item.toxin', filler: 'annotation.item.filler', laser: 'annotation.item.laser',
  peel: 'annotation.item.peel', lesion: 'annotation.item.lesion', note: 'annotation.item.note',
};
// Freehand points closer than this (CSS px) to the previous one add nothing visible.
const MIN_STEP_PX = 1.5;
// A circle or arrow dragged less than this (CSS px) was a slip, not a shape.
const MIN_SHAPE_PX = 4;
const CLEAR_CONFIRM_MS = 4_000;
const STATUS_MS = 6_000;

const ERROR_TEXT = {
  board_full: 'annotation.error.board_full',
  rate_limited: 'annotation.error.rate_limited',
  nothing_to_undo: 'annotation.error.nothing_to_undo',
  too_many_points: 'annotation.error.too_many_points',
  too_long: 'annotation.error.too_long',
  forbidden: 'annotation.error.forbidden',
  no_reply: 'annotation.error.no_reply',
};
const FALLBACK_TEXT = {
  'off-face': 'annotation.fallback.off-face',
  'no-face': 'annotation.fallback.no-face',
};
const PIN_TITLE = {
  on: 'annotation.pin.on',
  off: 'annotation.pin.off',
  unavailable: 'annotation.pin.unavailable',
};

function hasFaceShapes(shapes) {
  for (const shape of shapes) if ((shape.anchor ?? 'screen') !== 'screen') return true;
  return false;
}

/** Everything drawn over a patient video: the board, then our unconfirmed shapes. */
function* boardShapes(client) {
  yield* client.annotations.shapes.values();
  yield* client.pendingAnnotations.values();
}

/**
 * The patient page: the marks over the patient's own preview, mirrored like it.
 * `figure` holds the preview `video`; it gets .has-annotations while there are marks.
 */
export function bindSelfViewAnnotations(client, figure, video) {
  // Our own face: the server sends the landmarks the face-anchored marks need.
  const faces = new FaceTracker(client);
  const overlay = new AnnotationOverlay(figure, {
    shapes: () => boardShapes(client),
    label: (n) => (n ? tn('annotation.self_marks', n) : t('annotation.self_marks_none')),
    before: video.nextSibling,
    face: () => faces.face(client.self?.id),
  });
  overlay.setVideo(video);
  faces.addEventListener('change', () => {
    if (hasFaceShapes(boardShapes(client))) overlay.redraw();
  });
  const update = () => {
    figure.classList.toggle('has-annotations', client.annotations.shapes.size > 0);
    overlay.redraw();
  };
  client.addEventListener('annotations', update);
  // A new stream (camera switched) or mirroring change: the picture moved.
  client.addEventListener('localmedia', update);
  onLanguageChange(update);  // the overlay's accessible label
  update();
  return overlay;
}

/** The treatment item a mark stands for: its own, else the palette colour it is drawn in. */
function itemOf(shape) {
  if (shape.item && shape.item in PALETTE) return shape.item;
  return Object.keys(PALETTE).find((item) => PALETTE[item] === shape.color) ?? null;
}

/**
 * The patient page: what the colours of the doctor's marks mean (Toxin, Filler, …), as a
 * list under the own preview, only the items drawn. The list follows the preview, which
 * grows and moves (tap, back camera, waiting room), so it is placed from its box.
 */
export function bindMarkLegend(client, figure) {
  const legend = document.createElement('ul');
  legend.className = 'mark-legend';
  legend.hidden = true;
  figure.after(legend);
  const place = () => {
    legend.style.top = `${figure.offsetTop + figure.offsetHeight + 6}px`;
    legend.style.left = `${figure.offsetLeft}px`;
    legend.style.width = `${figure.offsetWidth}px`;
  };
  const update = () => {
    const drawn = new Set([...client.annotations.shapes.values()].map(itemOf));
    const items = Object.keys(PALETTE).filter((item) => drawn.has(item));
    legend.replaceChildren(...items.map((item) => {
      const entry = document.createElement('li');
      entry.dataset.item = item;
      entry.style.setProperty('--swatch', PALETTE[item]);
      entry.textContent = t(ITEM_LABELS[item]);
      return entry;
    }));
    legend.setAttribute('aria-label', t('annotation.legend'));
    legend.hidden = items.length === 0;
    if (!legend.hidden) place();
  };
  new ResizeObserver(() => { if (!legend.hidden) place(); }).observe(figure);
  window.addEventListener('resize', () => { if (!legend.hidden) place(); });
  client.addEventListener('annotations', update);
  onLanguageChange(update);
  update();
  return legend;
}

/**
 * The console: an overlay on every patient tile of `view` (a RemoteMediaView), and the
 * drawing tools on it when we may annotate. Returns `sync`, to call after each
 * view.render(client) so overlays follow tiles and videos that come and go.
 */
export function bindPatientAnnotations(client, view) {
  const layers = new Map();  // tile -> {overlay, tools}
  // The patients' faces, from the analysis' `face-metrics`: for drawing face-anchored
  // marks and for pinning new ones.
  const faces = new FaceTracker(client);
  faces.addEventListener('change', () => {
    const redraw = hasFaceShapes(boardShapes(client));
    for (const layer of layers.values()) {
      layer.tools?.updateFace();
      if (redraw || layer.tools?.draft) layer.overlay.redraw();
    }
  });
  onLanguageChange(() => {
    for (const layer of layers.values()) {
      layer.tools?.update();
      layer.overlay.redraw();
    }
  });

  const sync = () => {
    for (const [tile, layer] of layers) {
      if (!tile.isConnected || tile.dataset.role !== 'patient') {
        layer.tools?.destroy();
        layer.overlay.destroy();
        layers.delete(tile);
      }
    }
    for (const tile of view.tiles.values()) {
      if (tile.dataset.role !== 'patient') continue;
      let layer = layers.get(tile);
      if (!layer) {
        const face = () => faces.face(tile.dataset.participantId);
        const overlay = new AnnotationOverlay(tile, {
          shapes: () => layer.tools ? layer.tools.shapes() : boardShapes(client),
          label: (n) => tn('annotation.patient_marks', n),
          before: tile.querySelector('.tile-placeholder'),
          face,
        });
        layer = {overlay, tools: null};
        layers.set(tile, layer);
      }
      layer.overlay.setVideo(tile.querySelector('video.remote-video'));
      const allowed = client.can('annotate');
      if (allowed && !layer.tools) {
        layer.tools = new AnnotationTools(client, layer.overlay, tile, () => faces.face(tile.dataset.participantId));
      }
      if (!allowed && layer.tools) {
        layer.tools.destroy();
        layer.tools = null;
      }
      layer.tools?.update();
      layer.overlay.redraw();
    }
  };

  client.addEventListener('annotations', () => {
    for (const layer of layers.values()) {
      layer.tools?.update();
      layer.overlay.redraw();
    }
  });
  client.addEventListener('annotationerror', (event) => {
    for (const layer of layers.values()) layer.tools?.showError(event.detail);
  });
  // Escape drops the shape being drawn; Ctrl+Z / Cmd+Z undoes our newest mark
  // (unless typing somewhere).
  document.addEventListener('keydown', (event) => {
    const all = [...layers.values()].map((l) => l.tools).filter(Boolean);
    if (event.key === 'Escape') {
      for (const tools of all) tools.cancel();
      return;
    }
    if (!(event.ctrlKey || event.metaKey) || event.shiftKey || event.altKey || event.key.toLowerCase() !== 'z') return;
    if (event.target.closest?.('input, textarea, select, [contenteditable]') || all.length === 0) return;
    event.preventDefault();
    all[0].undo();
  });
  return sync;
}

/**
 * The toolbar and pointer drawing over one patient tile. `face()` gives the tile's
 * newest face ({landmarks, triangles, tMs} or null, annotation-face.js' FaceTracker);
 * call updateFace() when it changes.
 */
export class AnnotationTools {
  constructor(client, overlay, tile, face = () => null) {
    this.client = client;
    this.overlay = overlay;
    this.tile = tile;
    this._face = face;
    this.tool = 'freehand';
    this.item = DEFAULT_ITEM;
    this.pinToFace = true;    // the clinician's choice; it applies while a face is known
    this.draft = null;        // the shape being dragged
    // Per point of the draft (or of a text label's corner): its face anchor, or why it
    // has none ('off-face', 'no-face'); null when the shape is not being pinned.
    this._anchors = null;
    this._pointer = null;     // {id, startX, startY, lastX, lastY} of the drawing pointer
    this._textAt = null;      // where a text label goes, between press and release
    this._textField = null;
    this._clearTimer = null;
    this._statusTimer = null;
    this._buildToolbar();
    this._bindPointer();
    this.update();
  }

  /** What the overlay draws: the board, our unconfirmed shapes, the one being drawn. */
  *shapes() {
    yield* boardShapes(this.client);
    if (this.draft) yield this.draft;
  }

  /** Reflects the client's state: connection, permissions, whether there is anything to undo. */
  update() {
    const {client} = this;
    const usable = client.joined;
    const mine = client.self?.identity;
    const ownShapes = [...client.annotations.shapes.values()].some((s) => s.author === mine)
      || client.pendingAnnotations.size > 0;
    for (const button of this.toolbar.querySelectorAll('button')) button.disabled = !usable;
    this._undo.disabled = !usable || !ownShapes;
    this._clear.hidden = !client.can('moderate');
    this._clear.disabled = !usable || (client.annotations.shapes.size === 0 && client.pendingAnnotations.size === 0);
    if (this._clear.disabled) this._disarmClear();
    for (const button of this.toolbar.querySelectorAll('[data-tool]')) {
      button.setAttribute('aria-pressed', String(button.dataset.tool === this.tool));
    }
    for (const button of this.toolbar.querySelectorAll('[data-item]')) {
      button.setAttribute('aria-pressed', String(button.dataset.item === this.item));
    }
    this._itemName.textContent = t(ITEM_LABELS[this.item]);
    this.overlay.canvas.classList.toggle('is-drawing', usable && this.tool !== null);
    this.overlay.canvas.dataset.tool = this.tool ?? '';
    // The toolbar's one tab stop must stay on a button that can take focus.
    const stop = this.toolbar.querySelector('button[tabindex="0"]');
    if (!stop || stop.disabled || stop.hidden) this._setRovingStop(this.toolbar.querySelector('[data-tool]'));
    this.updateFace();
    if (!usable) this.cancel();
  }

  /** The "Pin to face" toggle: pressed while new marks will follow the face. */
  updateFace() {
    const available = this._faceNow() !== null;
    const state = !available ? 'unavailable' : this.pinToFace ? 'on' : 'off';
    const pin = this._pin;
    pin.dataset.state = state;
    pin.setAttribute('aria-pressed', String(state === 'on'));
    pin.title = t(PIN_TITLE[state]);
    pin.disabled = !this.client.joined || !available;
    this.toolbar.dataset.anchor = state === 'on' ? 'face' : 'screen';
    if (pin.disabled && pin.tabIndex === 0) this._setRovingStop(this.toolbar.querySelector('[data-tool]'));
  }

  /** The face to anchor to now: full landmarks and the triangle table, or null. */
  _faceNow() {
    const face = this._face();
    return face?.landmarks && face.triangles ? face : null;
  }

  selectTool(tool) {
    // Pressing the active tool again puts it away (the video can be looked at without
    // a stray click drawing on it).
    this.tool = this.tool === tool ? null : tool;
    this.cancel();
    this.update();
  }

  selectItem(item) {
    this.item = item;
    this.update();
  }

  undo() {
    this.cancel();
    this.client.undoAnnotation();
  }

  showError({code, message}) {
    this._showStatus(Object.hasOwn(ERROR_TEXT, code) ? t(ERROR_TEXT[code], {max: LIMITS.maxTextChars})
      : t('annotation.error.unknown', {message}));
  }

  _showStatus(text) {
    this._status.textContent = text;
    this._status.hidden = false;
    clearTimeout(this._statusTimer);
    this._statusTimer = setTimeout(() => {
      this._status.hidden = true;
      this._status.textContent = '';
    }, STATUS_MS);
  }

  destroy() {
    this.cancel();
    clearTimeout(this._clearTimer);
    clearTimeout(this._statusTimer);
    this._unbindPointer();
    this.overlay.canvas.classList.remove('is-drawing');
    this.toolbar.remove();
  }

  // ---- toolbar -------------------------------------------------------------------

  _buildToolbar() {
    const bar = document.createElement('div');
    bar.className = 'annotation-toolbar';
    bar.setAttribute('role', 'toolbar');
    bar.dataset.i18nAttr = 'aria-label:annotation.toolbar';

    const tools = TOOLS.map(({id, label, icon: name}) => {
      const button = toolButton(label, name);
      button.dataset.tool = id;
      button.addEventListener('click', () => this.selectTool(id));
      return button;
    });

    const items = Object.keys(PALETTE).map((item) => {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'tool swatch';
      button.dataset.item = item;
      button.style.setProperty('--swatch', PALETTE[item]);
      button.dataset.i18nAttr = `aria-label:${ITEM_LABELS[item]};title:${ITEM_LABELS[item]}`;
      button.addEventListener('click', () => this.selectItem(item));
      return button;
    });
    const itemGroup = document.createElement('div');
    itemGroup.className = 'annotation-items';
    itemGroup.setAttribute('role', 'group');
    itemGroup.dataset.i18nAttr = 'aria-label:annotation.items';
    this._itemName = document.createElement('span');
    this._itemName.className = 'annotation-item-name';
    this._itemName.setAttribute('aria-hidden', 'true');  // the pressed swatch says it
    itemGroup.append(...items, this._itemName);

    this._undo = toolButton('annotation.undo', 'undo');
    this._undo.classList.add('annotation-undo');
    this._undo.addEventListener('click', () => this.undo());

    // Clearing cannot be undone: the first press arms it, the second clears.
    this._clear = toolButton('annotation.clear', 'trash');
    this._clear.classList.add('annotation-clear');
    this._clearText = document.createElement('span');
    this._clearText.className = 'tool-text';
    this._clearText.dataset.i18n = 'annotation.clear_confirm';
    this._clearText.hidden = true;
    this._clear.append(this._clearText);
    this._clear.addEventListener('click', () => this._onClear());

    this._status = document.createElement('p');
    this._status.className = 'annotation-status';
    this._status.setAttribute('role', 'status');
    this._status.hidden = true;

    // Pin to face: a toggle button (aria-pressed), on by default while a face is known.
    this._pin = document.createElement('button');
    this._pin.type = 'button';
    this._pin.className = 'tool annotation-pin';
    const pinText = document.createElement('span');
    pinText.className = 'tool-text';
    pinText.dataset.i18n = 'annotation.pin';
    this._pin.append(pinText);
    this._pin.addEventListener('click', () => {
      this.pinToFace = !this.pinToFace;
      this.updateFace();
    });

    bar.append(...tools, this._pin, separator(), itemGroup, separator(), this._undo, this._clear, this._status);
    bar.addEventListener('keydown', (event) => this._rovingFocus(event));
    this.toolbar = bar;
    applyTranslations(bar);  // and again on every change of language (i18n.js)
    this.tile.append(bar);
    this._setRovingStop(tools[0]);
  }

  _onClear() {
    if (this._clear.dataset.confirm === undefined) {
      this._clear.dataset.confirm = '';
      this._clearText.hidden = false;
      this._clear.dataset.i18nAttr = 'aria-label:annotation.clear_armed;title:annotation.clear';
      applyTranslations(this._clear);
      this._clearTimer = setTimeout(() => this._disarmClear(), CLEAR_CONFIRM_MS);
      return;
    }
    this._disarmClear();
    this.cancel();
    this.client.clearAnnotations();
  }

  _disarmClear() {
    clearTimeout(this._clearTimer);
    delete this._clear.dataset.confirm;
    this._clearText.hidden = true;
    this._clear.dataset.i18nAttr = 'aria-label:annotation.clear;title:annotation.clear';
    applyTranslations(this._clear);
  }

  // A toolbar is one tab stop; arrow keys, Home and End move within it.
  _rovingFocus(event) {
    const keys = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: 'first', End: 'last'};
    const move = keys[event.key];
    if (move === undefined || event.target.tagName !== 'BUTTON') return;
    const buttons = [...this.toolbar.querySelectorAll('button')].filter((b) => !b.hidden && !b.disabled);
    const index = buttons.indexOf(event.target);
    if (index === -1) return;
    const next = move === 'first' ? 0 : move === 'last' ? buttons.length - 1
      : (index + move + buttons.length) % buttons.length;
    event.preventDefault();
    this._setRovingStop(buttons[next]);
    buttons[next].focus();
  }

  _setRovingStop(target) {
    for (const button of this.toolbar.querySelectorAll('button')) button.tabIndex = button === target ? 0 : -1;
  }

  // ---- drawing -------------------------------------------------------------------

  _bindPointer() {
    const {canvas} = this.overlay;
    this._handlers = {
      pointerdown: (e) => this._onDown(e),
      pointermove: (e) => this._onMove(e),
      pointerup: (e) => this._onUp(e),
      pointercancel: (e) => this._onCancel(e),
      lostpointercapture: (e) => this._onCancel(e),
    };
    for (const [type, handler] of Object.entries(this._handlers)) canvas.addEventListener(type, handler);
  }

  _unbindPointer() {
    for (const [type, handler] of Object.entries(this._handlers)) this.overlay.canvas.removeEventListener(type, handler);
  }

  _onDown(event) {
    if (!this.tool || this._pointer || !this.client.joined) return;
    if (event.pointerType === 'mouse' && event.button !== 0) return;
    this._commitText();
    const point = this.overlay.toFrame(event.clientX, event.clientY);
    if (!point) return;  // on a letterbox bar: not on the picture
    event.preventDefault();
    this.overlay.canvas.setPointerCapture(event.pointerId);
    this._pointer = {id: event.pointerId, startX: event.clientX, startY: event.clientY,
                     lastX: event.clientX, lastY: event.clientY};
    const p = point.map(coord);
    const style = {anchor: 'screen', item: this.item, color: PALETTE[this.item], width: LIMITS.defaultWidth};
    // Decided once per shape: a mark is pinned as a whole or not at all.
    this._anchors = this.pinToFace && this._faceNow() ? [] : null;
    const anchor = this._anchor(p);
    if (this.tool === 'freehand') this.draft = {kind: 'freehand', points: [p], ...style};
    else if (this.tool === 'circle') this.draft = {kind: 'circle', center: p, edge: p, ...style};
    else if (this.tool === 'arrow') this.draft = {kind: 'arrow', from: p, to: p, ...style};
    else this._textAt = p;  // the text field opens on release
    this._anchors?.push(anchor, ...(this.tool === 'circle' || this.tool === 'arrow' ? [anchor] : []));
    this.overlay.redraw();
  }

  _onMove(event) {
    const pointer = this._pointer;
    if (!pointer || event.pointerId !== pointer.id || !this.draft) return;
    const events = event.getCoalescedEvents?.() ?? [];
    for (const e of events.length ? events : [event]) {
      const point = this.overlay.toFrame(e.clientX, e.clientY, {clamp: true});
      if (!point) continue;
      const p = point.map(coord);
      if (this.draft.kind === 'freehand') {
        if (Math.hypot(e.clientX - pointer.lastX, e.clientY - pointer.lastY) < MIN_STEP_PX) continue;
        this.draft.points.push(p);
        this._anchors?.push(this._anchor(p));
        if (this.draft.points.length >= LIMITS.maxPointsPerStroke) {
          // The longest stroke the server takes: send it, go on with a new one.
          this._send(this.draft);
          this.draft = {...this.draft, points: [p]};
          if (this._anchors) this._anchors = [this._anchors[this._anchors.length - 1]];
        }
      } else if (this.draft.kind === 'circle') {
        this.draft.edge = p;
        if (this._anchors) this._anchors[1] = this._anchor(p);
      } else {
        this.draft.to = p;
        if (this._anchors) this._anchors[1] = this._anchor(p);
      }
      pointer.lastX = e.clientX;
      pointer.lastY = e.clientY;
    }
    this.overlay.redraw();
  }

  _onUp(event) {
    const pointer = this._pointer;
    if (!pointer || event.pointerId !== pointer.id) return;
    this._pointer = null;
    if (this.overlay.canvas.hasPointerCapture(event.pointerId)) {
      this.overlay.canvas.releasePointerCapture(event.pointerId);
    }
    const draft = this.draft;
    this.draft = null;
    if (this.tool === 'text' && this._textAt) {
      this._openTextField(this._textAt, this._anchors, pointer.startX, pointer.startY);
    } else if (draft) {
      const moved = Math.hypot(event.clientX - pointer.startX, event.clientY - pointer.startY);
      // A tap with the pen is a dot; a circle or arrow needs a drag.
      if (draft.kind === 'freehand' || moved >= MIN_SHAPE_PX) this._send(draft);
    }
    this._anchors = null;  // a text label's went with its field
    this.overlay.redraw();
  }

  _onCancel(event) {
    if (!this._pointer || event.pointerId !== this._pointer.id) return;
    // After pointerup the capture is released on purpose: nothing left to cancel then.
    this._pointer = null;
    this.draft = null;
    this._textAt = null;
    this._anchors = null;
    this.overlay.redraw();
  }

  /** Drops the shape being drawn and any open text field. */
  cancel() {
    this._pointer = null;
    this.draft = null;
    this._textAt = null;
    this._anchors = null;
    this._closeTextField();
    this.overlay.redraw();
  }

  /** Point p's face anchor, or why it has none; null when the shape is not pinned. */
  _anchor(p) {
    if (this._anchors === null) return null;
    const face = this._faceNow();
    if (!face) return 'no-face';
    const found = anchorPoints([p], face.landmarks, face.triangles);
    return (found && roundAnchor(found[0])) ?? 'off-face';
  }

  /** Sends a drawn shape: face-anchored when every point of it has an anchor. */
  _send(draft, anchors = this._anchors) {
    const {color, ...shape} = draft;  // the item gives the colour; the server adds it
    if (shape.kind === 'freehand') shape.points = [...shape.points];
    if (anchors) {
      const problem = anchors.find((a) => typeof a === 'string');
      if (problem) {
        this._showStatus(t(FALLBACK_TEXT[problem]));  // the screen-anchored shape it stays
      } else {
        shape.anchor = 'face';
        if (shape.kind === 'freehand') shape.points = [...anchors];
        else if (shape.kind === 'circle') [shape.center, shape.edge] = anchors;
        else if (shape.kind === 'arrow') [shape.from, shape.to] = anchors;
        else shape.at = anchors[0];
      }
    }
    this.client.annotate(shape);
  }

  _openTextField(at, anchors, clientX, clientY) {
    this._closeTextField();
    const field = document.createElement('input');
    field.type = 'text';
    field.className = 'annotation-text-field';
    field.maxLength = LIMITS.maxTextChars;
    field.setAttribute('aria-label', t('annotation.text_field'));
    field.placeholder = t('annotation.text_placeholder');
    field.style.setProperty('--swatch', PALETTE[this.item]);
    const box = this.tile.getBoundingClientRect();
    field.style.left = `${Math.max(0, clientX - box.left)}px`;
    field.style.top = `${Math.max(0, clientY - box.top)}px`;
    field.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        this._commitText();
      } else if (event.key === 'Escape') {
        event.preventDefault();
        this.cancel();
      }
    });
    field.addEventListener('blur', () => this._commitText());
    this._textField = {field, at, anchors, item: this.item};
    this.tile.append(field);
    // Keep the field inside the tile.
    const overflow = field.getBoundingClientRect().right - box.right;
    if (overflow > 0) field.style.left = `${Math.max(0, parseFloat(field.style.left) - overflow - 4)}px`;
    field.focus();
  }

  /** Sends the open text field's label, if it has one, and closes the field. */
  _commitText() {
    const open = this._textField;
    if (!open) return;
    this._textField = null;
    // One plain line: no control or format characters (the server refuses them).
    const text = open.field.value.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, '').trim();
    open.field.remove();
    if (text) this._send({kind: 'text', anchor: 'screen', at: open.at, text, item: open.item}, open.anchors);
    this._textAt = null;
    this._anchors = null;
  }

  _closeTextField() {
    const open = this._textField;
    this._textField = null;
    open?.field.remove();
  }
}

/** A toolbar button named by catalogue key `label` (aria-label and tooltip). */
function toolButton(label, iconName) {
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'tool';
  button.dataset.i18nAttr = `aria-label:${label};title:${label}`;
  button.append(icon(iconName));
  return button;
}

function separator() {
  const line = document.createElement('span');
  line.className = 'toolbar-separator';
  line.setAttribute('aria-hidden', 'true');
  return line;
}
