/**
 * ViewSizes: tells the server how large each remote video is drawn (client.reportView),
 * in device pixels, so that it sends us no simulcast layer larger than the picture we
 * show. A video that cannot be seen (not rendered, scrolled away, the page in the
 * background) counts as 0x0.
 */

const VIDEO_SELECTOR = 'video.remote-video';
// Past 2 device pixels per CSS pixel a phone at arm's length shows no more detail: a 3x
// phone is sent no more than a 2x one would be.
const MAX_PIXEL_RATIO = 2;
const MAX_SIDE = 8192;  // the largest size the protocol accepts
const MAX_VIDEOS = 32;  // per message, as the protocol accepts (only a very large room has more)
// Layers differ by a factor of two: smaller changes would not pick another one.
const CHANGE_RATIO = 0.1;
// At most one message this often (a window being dragged wider resizes every frame).
const SEND_INTERVAL_MS = 300;
const HIDDEN = Object.freeze({width: 0, height: 0});

/**
 * Watches the remote videos in `container` (RemoteMediaView's tiles) and reports their
 * sizes whenever one changes much, and all of them after every (re)join: the server
 * forgets them with the session.
 */
export class ViewSizes {
  constructor(client, container) {
    this.client = client;
    this.container = container;
    // video element -> {box: its content box in CSS px, inView}; null until the observers tell
    this._videos = new Map();
    this._sent = new Map();    // participant id -> {width, height} the server last heard
    this._timer = null;
    this._lastSentAt = -Infinity;
    this._onVideoResize = () => this._schedule();  // the picture's aspect ratio may change
    this._resizes = new ResizeObserver((entries) => this._observed(entries, (state, entry) => {
      state.box = {width: entry.contentRect.width, height: entry.contentRect.height};
    }));
    this._intersections = new IntersectionObserver((entries) => this._observed(entries, (state, entry) => {
      state.inView = entry.isIntersecting;
    }));
    // RemoteMediaView adds and removes videos as people come, go and turn cameras on and off.
    new MutationObserver(() => this._syncVideos()).observe(container, {childList: true, subtree: true});
    document.addEventListener('visibilitychange', () => this._schedule());
    client.addEventListener('joined', () => this._sendAll());
    this._syncVideos();
  }

  _syncVideos() {
    const present = new Set(this.container.querySelectorAll(VIDEO_SELECTOR));
    let changed = false;
    for (const video of this._videos.keys()) {
      if (present.has(video)) continue;
      this._unwatch(video);
      changed = true;
    }
    for (const video of present) {
      if (this._videos.has(video)) continue;
      this._watch(video);
      changed = true;
    }
    if (changed) this._schedule();
  }

  _watch(video) {
    this._videos.set(video, {box: null, inView: null});
    this._resizes.observe(video);
    this._intersections.observe(video);
    video.addEventListener('loadedmetadata', this._onVideoResize);
    video.addEventListener('resize', this._onVideoResize);
  }

  _unwatch(video) {
    this._videos.delete(video);
    this._resizes.unobserve(video);
    this._intersections.unobserve(video);
    video.removeEventListener('loadedmetadata', this._onVideoResize);
    video.removeEventListener('resize', this._onVideoResize);
  }

  _observed(entries, update) {
    for (const entry of entries) {
      const state = this._videos.get(entry.target);
      if (state) update(state, entry);
    }
    this._schedule();
  }

  /** Sends the changes soon: events of one layout come together, and sends are spaced. */
  _schedule() {
    if (this._timer) return;
    const wait = Math.max(0, this._lastSentAt + SEND_INTERVAL_MS - performance.now());
    this._timer = setTimeout(() => this._flush(), wait);
  }

  /** A new session has heard nothing: everything is a change. */
  _sendAll() {
    this._syncVideos();
    this._sent.clear();
    this._flush();
  }

  _flush() {
    clearTimeout(this._timer);
    this._timer = null;
    const sizes = this._measure();
    for (const id of this._sent.keys()) {
      if (!sizes.has(id)) this._sent.delete(id);  // gone: the server needs no word of it
    }
    const changes = [...sizes].filter(([id, size]) => changedMuch(this._sent.get(id), size));
    for (let start = 0; start < changes.length; start += MAX_VIDEOS) {
      const part = changes.slice(start, start + MAX_VIDEOS);
      // Not joined: nothing is lost, the next join sends all.
      if (!this.client.reportView(Object.fromEntries(part))) return;
      for (const [id, size] of part) this._sent.set(id, size);
      this._lastSentAt = performance.now();
    }
  }

  /** Participant id -> the size its picture is drawn at now, in device pixels. */
  _measure() {
    const hidden = document.visibilityState === 'hidden';
    const scale = Math.min(window.devicePixelRatio || 1, MAX_PIXEL_RATIO);
    const sizes = new Map();
    for (const [video, state] of this._videos) {
      const id = video.dataset.participantId;
      if (!id) continue;
      if (hidden || state.inView === false || (state.box && (!state.box.width || !state.box.height))) {
        sizes.set(id, HIDDEN);
        continue;
      }
      // Not laid out yet: reported once the observers have told; a guessed 0x0 would
      // pause the video the server has only just started sending.
      if (!state.box || state.inView === null) continue;
      const picture = pictureSize(state.box, video.videoWidth, video.videoHeight, getComputedStyle(video).objectFit);
      sizes.set(id, {width: devicePixels(picture.width * scale), height: devicePixels(picture.height * scale)});
    }
    return sizes;
  }
}

/**
 * The size of the picture a video draws in its content `box` (CSS px) under its
 * `object-fit`: fitted inside it (contain) or covering it (cover, one side larger than
 * the box). The box itself for fill and none, and before the video has a size.
 */
function pictureSize(box, videoWidth, videoHeight, fit) {
  // scale-down draws at most what contain does; its "none" side would follow the layer sent.
  const fitted = fit === 'contain' || fit === 'scale-down';
  if (!videoWidth || !videoHeight || (!fitted && fit !== 'cover')) return box;
  const aspect = videoWidth / videoHeight;
  const boxIsWider = box.width / box.height > aspect;
  // In a box wider than the picture, contain fills its height and cover its width.
  if (boxIsWider === fitted) return {width: box.height * aspect, height: box.height};
  return {width: box.width, height: box.width / aspect};
}

function devicePixels(cssPixels) {
  return Math.min(MAX_SIDE, Math.max(0, Math.round(cssPixels)));
}

/** True when the server should hear of `size`: new, to or from 0x0, or more than 10 % off. */
function changedMuch(sent, size) {
  return !sent || differs(sent.width, size.width) || differs(sent.height, size.height);
}

function differs(before, now) {
  if (before === 0 || now === 0) return before !== now;
  return Math.abs(now - before) > before * CHANGE_RATIO;
}
