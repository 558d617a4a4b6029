/**
 * Plays the viewer's watermarked replay of one participant in a <video> element while
 * the server is still preparing it (signalling/replay_api.py, recorder/replay_cache.py).
 *
 * Why a MediaSource: the server renders the file front to back (decode, mark for this
 * viewer, encode), a few times faster than real time. A plain `video.src` could neither
 * play a file whose length is not known yet nor seek in it, and waiting for the whole
 * file would keep a trainer waiting minutes for a long consultation. So the element
 * plays a MediaSource, and this class appends the file to it: the initialisation
 * segment, then whole clusters from the one at the playhead on, up to AHEAD_S ahead.
 * The status (polled while the file is prepared) says how much may be fetched and
 * where playback may start (`points`: clusters that begin with a keyframe); after a
 * seek, appending resumes at the point before the new position. Signed URLs expire:
 * on 401/403 it asks for fresh ones.
 *
 * Test hook: `.state`, `.progress`, `.watermark`, `.statesSeen` (window.trainer.state()).
 */

const AHEAD_S = 30;            // buffered ahead of the playhead before fetching stops
const BEHIND_S = 20;           // kept behind the playhead when the browser's buffer is full
const POLL_MS = 500;           // status while the replay is being prepared
const IDLE_MS = 1000;          // nothing to do: look again (or at once after a seek)
const MIN_FETCH = 256 * 1024;  // small clusters (sound only) are fetched together
const MAX_FETCH = 4 * 1024 * 1024;
const CONTINUE_S = 0.25;       // the buffered end and the next cluster's time differ by a frame or so
const MAX_AUTH_RETRIES = 3;

export class ReplayError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

/** Index of the last point with time <= ms, or -1 (points sorted by time). */
function lastPointAtOrBefore(points, ms) {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (points[mid][0] <= ms) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

export class ReplaySource {
  /**
   * urls: {media, status} (signed); mime: for addSourceBuffer; refreshUrls(): Promise of fresh
   * {media, status}; onChange(source): progress, state or errors changed.
   */
  constructor(video, {urls, mime, refreshUrls, onChange}) {
    this.video = video;
    this.urls = urls;
    this.mime = mime;
    this.refreshUrls = refreshUrls;
    this.onChange = onChange ?? (() => {});
    this.state = 'queued';       // queued | rendering | ready | failed
    this.statesSeen = [];
    this.progress = 0;
    this.renderedMs = 0;
    this.durationMs = null;
    this.watermark = null;
    this.error = null;
    this.points = [];
    this.destroyed = false;
    this._status = null;
    this._initDone = false;
    this._last = null;           // {j, to}: the point index of the last append and where it ended
    this._authFailures = 0;
    this._wake = null;
    this._abort = new AbortController();
    this.ms = new MediaSource();
    this._objectUrl = URL.createObjectURL(this.ms);
    this._onSeeking = () => this._wakeUp();
    video.addEventListener('seeking', this._onSeeking);
    video.src = this._objectUrl;
    this._run().catch((err) => this._fail(err));
  }

  setUrls(urls) {
    if (urls?.media && urls?.status) this.urls = urls;
  }

  /** Seconds of the replay that are rendered (Infinity once it is complete). */
  get readyUntil() {
    return this.state === 'ready' ? Infinity : this.renderedMs / 1000;
  }

  destroy() {
    this.destroyed = true;
    this._abort.abort();
    this.video.removeEventListener('seeking', this._onSeeking);
    this._wakeUp();
    URL.revokeObjectURL(this._objectUrl);
  }

  // -- the loop --

  async _run() {
    await new Promise((resolve) => this.ms.addEventListener('sourceopen', resolve, {once: true}));
    URL.revokeObjectURL(this._objectUrl);
    if (this.destroyed) return;
    if (!MediaSource.isTypeSupported(this.mime)) {
      throw new ReplayError('unsupported', `this browser cannot play ${this.mime}`);
    }
    this.sb = this.ms.addSourceBuffer(this.mime);
    while (!this.destroyed) {
      const st = await this._currentStatus();
      if (this.destroyed) return;
      if (st.state === 'failed') throw new ReplayError(st.error?.code ?? 'render_failed', st.error?.message);
      if (this.ms.readyState === 'open' && Number.isNaN(this.ms.duration) && st.duration_ms && !this.sb.updating) {
        this.ms.duration = st.duration_ms / 1000;
      }
      if (!this._initDone) {
        if (st.init_bytes != null && st.ready_bytes >= st.init_bytes) {
          await this._append(await this._fetch(0, st.init_bytes));
          this._initDone = true;
          continue;
        }
      } else {
        const next = this._next(st);
        if (next) {
          await this._append(await this._fetch(next.from, next.to));
          this._last = {j: next.j, to: next.to};
          continue;
        }
        if (st.state === 'ready' && this._last?.to === st.size && this.ms.readyState === 'open' && !this.sb.updating) {
          this.ms.endOfStream();  // the rest of the element's timeline is not coming: play to the end
        }
      }
      await this._sleep(st.state === 'ready' ? IDLE_MS : POLL_MS);
    }
  }

  /** The server's status; once the replay is complete it does not change any more. */
  async _currentStatus() {
    if (this._status?.state === 'ready') return this._status;
    const url = `${this.urls.status}&since=${this.points.length}`;
    const response = await this._request(url, {});
    const st = await response.json();
    if (st.points_from === this.points.length) this.points.push(...st.points);
    this._status = st;
    const changed = st.state !== this.state || st.progress !== this.progress || st.watermark !== this.watermark;
    if (st.state !== this.statesSeen.at(-1)) this.statesSeen.push(st.state);
    this.state = st.state;
    this.progress = st.progress;
    this.renderedMs = st.servable_ms ?? st.rendered_ms ?? 0;  // how far what may be fetched plays
    this.durationMs = st.duration_ms;
    this.watermark = st.watermark;
    if (changed) this.onChange(this);
    return st;
  }

  /** What to append next: whole clusters from the point at (or just before) what the playhead needs. */
  _next(st) {
    const t = this.video.currentTime;
    const buffered = this.sb.buffered;
    let want = t;
    let continuing = false;
    for (let i = 0; i < buffered.length; i += 1) {
      if (buffered.start(i) - 0.1 <= t && t < buffered.end(i)) {
        want = buffered.end(i);
        continuing = true;
        break;
      }
    }
    if (want - t > AHEAD_S) return null;
    const points = this.points;
    if (!points.length) return null;
    const runEnd = (j) => (j + 1 < points.length ? points[j + 1][1] : st.ready_bytes);
    let j = Math.max(0, lastPointAtOrBefore(points, (want + (continuing ? CONTINUE_S : 0)) * 1000));
    let from = points[j][1];
    if (this._last?.j === j && this._last.to >= from) {
      if (this._last.to < runEnd(j)) from = this._last.to;  // the same cluster run has grown since
      else if (j + 1 < points.length) from = points[++j][1];  // appended already: the next one
      else return null;                                      // nothing more rendered yet
    }
    // A seek beyond what is rendered: wait for the render to get there rather than fetch what it skips.
    if (!continuing && st.state !== 'ready' && j === points.length - 1 && this.renderedMs / 1000 < t) return null;
    let to = runEnd(j);
    while (to - from < MIN_FETCH && j + 1 < points.length && runEnd(j + 1) - from <= MAX_FETCH) {
      j += 1;
      to = runEnd(j);
    }
    return to > from ? {j, from, to} : null;
  }

  // -- I/O --

  async _request(url, headers) {
    for (;;) {
      let response;
      try {
        response = await fetch(url, {headers, cache: 'no-store', signal: this._abort.signal});
      } catch (err) {
        if (this.destroyed) throw new ReplayError('destroyed');
        await this._sleep(1000);  // the network: try again
        continue;
      }
      if (response.ok) {
        this._authFailures = 0;
        return response;
      }
      const body = await response.json().catch(() => null);
      const code = body?.error ?? 'unavailable';
      if (response.status === 503 && code === 'preparing') {
        await this._sleep(POLL_MS);
      } else if ((response.status === 401 || response.status === 403) && this._authFailures < MAX_AUTH_RETRIES) {
        // Most often an expired URL (they live minutes; a replay is watched for longer).
        this._authFailures += 1;
        const fresh = await this.refreshUrls();
        const wasStatus = url.startsWith(this.urls.status.split('?')[0]);
        this.setUrls(fresh);
        url = wasStatus ? `${this.urls.status}&since=${this.points.length}` : this.urls.media;
      } else {
        throw new ReplayError(code, body?.message);
      }
    }
  }

  async _fetch(from, to) {
    const response = await this._request(this.urls.media, {Range: `bytes=${from}-${to - 1}`});
    return response.arrayBuffer();
  }

  async _append(data) {
    for (let attempt = 0; ; attempt += 1) {
      if (this.destroyed) throw new ReplayError('destroyed');
      try {
        this.sb.appendBuffer(data);
        await this._updated();
        return;
      } catch (err) {
        if (err.name !== 'QuotaExceededError' || attempt >= 5) throw err;
        // The browser's buffer is full: let go of what was played long ago, or wait for the playhead.
        const t = this.video.currentTime;
        if (t - BEHIND_S > 1) {
          this.sb.remove(0, t - BEHIND_S);
          await this._updated();
        } else {
          await this._sleep(IDLE_MS);
        }
      }
    }
  }

  _updated() {
    return new Promise((resolve, reject) => {
      const done = () => { cleanup(); resolve(); };
      const failed = () => { cleanup(); reject(new ReplayError('append_failed', 'the replay could not be decoded')); };
      const cleanup = () => {
        this.sb.removeEventListener('updateend', done);
        this.sb.removeEventListener('error', failed);
      };
      this.sb.addEventListener('updateend', done);
      this.sb.addEventListener('error', failed);
    });
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this._wake = null; resolve(); }, ms);
      this._wake = () => { clearTimeout(timer); this._wake = null; resolve(); };
    });
  }

  _wakeUp() {
    this._wake?.();
  }

  _fail(err) {
    if (this.destroyed || err?.code === 'destroyed') return;
    this.state = 'failed';
    this.statesSeen.push('failed');
    this.error = {code: err?.code ?? 'replay_failed', message: err?.message ?? String(err)};
    this.onChange(this);
  }
}
