/**
 * The page's copy of the room's annotation board (annotate/board.py on the server):
 * shapes in drawing order, kept in step with the server's versioned events.
 *
 * The server numbers every accepted operation (`version`); events are applied strictly
 * in that order. An event that arrives ahead of a missing one is held back and the
 * owner asks for a snapshot (`annotations-get`), which replaces the whole board.
 * No DOM here: ConsultClient owns one of these, the pages draw from it.
 */

// Treatment items and their colours: must match PALETTE in annotate/model.py (the
// server resolves `item` to the colour it relays; this copy is for the local preview
// and the colour picker). tests/browser/test_annotation.py checks they agree.
export const PALETTE = Object.freeze({
  toxin: '#2f80ff',
  filler: '#ff2fd0',
  laser: '#22e07a',
  peel: '#ffd21f',
  lesion: '#ff3030',
  note: '#ffffff',
});
export const DEFAULT_ITEM = 'note';

// annotate/limits.py
export const LIMITS = Object.freeze({
  maxPointsPerStroke: 2000,
  maxTextChars: 200,
  coordDecimals: 5,
  defaultWidth: 4,
  minWidth: 1,
  maxWidth: 32,
});

/** A normalised coordinate as the server keeps it: clamped to 0..1, 5 decimals. */
export function coord(value) {
  const scale = 10 ** LIMITS.coordDecimals;
  return Math.round(Math.min(1, Math.max(0, value)) * scale) / scale;
}

/** The colour a shape is drawn in: its own, else its item's, else the default. */
export function shapeColor(shape) {
  return shape.color ?? PALETTE[shape.item] ?? PALETTE[DEFAULT_ITEM];
}

export class AnnotationBoard {
  constructor() {
    this.shapes = new Map();  // id -> shape, in drawing (z) order
    this.version = null;      // null: unknown until a snapshot arrives
    this._held = new Map();   // version -> event that arrived ahead of a missing one
  }

  /** Forget the version (a new connection): everything waits for its snapshot. The
   *  shapes stay on screen meanwhile, so a reconnect does not make the marks flicker. */
  resync() {
    this.version = null;
    this._held.clear();
  }

  /** Empty, e.g. after the call ended. */
  reset() {
    this.resync();
    this.shapes.clear();
  }

  /** Replaces the board with a snapshot, then applies held events newer than it. */
  applySnapshot(snapshot) {
    this.shapes = new Map((snapshot.shapes ?? []).map((shape) => [shape.id, shape]));
    this.version = snapshot.version;
    for (const version of [...this._held.keys()]) {
      if (version <= this.version) this._held.delete(version);
    }
    this._drain();
  }

  /**
   * Applies one `annotation` event in version order. Returns the events applied now
   * (the held ones it unblocked included), and `gap`: true when events are missing
   * and a snapshot is needed.
   */
  applyEvent(event) {
    if (!Number.isInteger(event.version)) return {applied: [], gap: false};
    if (this.version !== null && event.version <= this.version) {
      return {applied: [], gap: false};  // already in the snapshot we have
    }
    this._held.set(event.version, event);
    const applied = this._drain();
    return {applied, gap: this._held.size > 0};
  }

  _drain() {
    const applied = [];
    if (this.version === null) return applied;
    for (let next = this._held.get(this.version + 1); next; next = this._held.get(this.version + 1)) {
      this._held.delete(next.version);
      this._apply(next);
      this.version = next.version;
      applied.push(next);
    }
    return applied;
  }

  _apply(event) {
    if (event.op === 'add' && event.shape?.id) {
      this.shapes.delete(event.shape.id);  // a re-used id goes on top, like a new shape
      this.shapes.set(event.shape.id, event.shape);
    } else if (event.op === 'undo' || event.op === 'clear') {
      for (const id of event.ids ?? []) this.shapes.delete(id);
    }
  }
}
