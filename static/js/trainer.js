/**
 * The trainer page: the recordings of the room the link is for, and a replay of one.
 *
 * The join token (from #token=…, removed from the address bar at once) authorises the
 * API calls (signalling/replay_api.py); media is loaded from the short-lived signed
 * URLs the API hands out, one file per participant (their video and sound together).
 * Each file is this viewer's watermarked replay, which the server prepares on the
 * first request and serves while it grows: replay-source.js feeds it to the element
 * through a MediaSource, and the page says how far the preparation has got ("Preparing
 * the watermarked replay… 40 %") while the clock waits for it.
 *
 * Sync: one master clock (the page's, performance.now() × speed) says where the
 * replay is; every participant's <video> follows it. An element drifting more than
 * RESYNC_S (as heard: media seconds ÷ speed) is moved (seeked) to the clock; a smaller
 * drift is evened out by running it slightly faster or slower. The clock runs in
 * phases: `starting` (after play, a seek or a stall: the elements are started and the
 * clock waits until all of them run, then starts from where they are, so the time a
 * browser takes to start playback does not count as drift), `running`, and `stalled`
 * (an element ran out of data: everything holds until it has it). A participant's
 * file starts at `start_ms` on the recording's timeline; before that (joined later)
 * and after its end the tile says so.
 *
 * One tile per person: someone who left and came back (a reload, a lost network) joined
 * as a new participant each time, but the API gives one person with their joins and one
 * file played across them; between two joins the tile says "Not connected". A person is
 * labelled once: "Mrs Chen · Patient", or "Patient" when the name only repeats the role.
 *
 * The list: the room's recordings (a part after a move says so, linked to the part it
 * carries on), and its photo sets apart, with their count: they hold no video to replay.
 *
 * The drawing over the patient's video is the annotation board as it was at that
 * moment: the recorded `annotation` events up to then, applied in order (add, undo,
 * clear; a snapshot replaces the board), drawn by annotation-render.js per the spec
 * in annotate/render.py. Face-anchored marks are drawn where the recorded face
 * landmarks put them at that moment, and left out when there are none.
 *
 * Test hook: window.trainer.state().
 */

import {poseLabel} from './analysis-state.js';
import {AnnotationOverlay} from './annotation-render.js';
import {byRole, forgetToken, takeTokenFromHash} from './call-ui.js';
import {
  bindLanguageSwitch, currentLanguage, hasText, initLanguage, listText, onLanguageChange, roleName, t as tr, tn,
} from './i18n.js';
import {ReplaySource} from './replay-source.js';

const ROLE_ORDER = ['patient', 'doctor', 'expert', 'trainer'];
const RESYNC_S = 0.1;           // drift that makes an element seek to the master clock
const NUDGE_S = 0.03;           // drift that is evened out by a slightly different speed
const NUDGE = 0.05;             // ... of ±5 %
const PAUSED_SNAP_S = 0.04;     // paused: elements show the clock's frame to within this
const TICK_MS = 50;
const START_TIMEOUT_MS = 1500;  // a phase `starting` that lasts longer starts the clock anyway
const METRICS_STALE_MS = 1500;  // face metrics older than this are not "now" (5 Hz when a face is seen)
const LANDMARKS_STALE_MS = 500;
const URL_REFRESH_MARGIN_S = 60;
const JOIN_MARGIN_S = 0.25;     // a join's media starts a moment after its event: not a gap
const MAX_MEDIA_RETRIES = 3;
const PREPARED_MARGIN_S = 0.5;  // the clock is this close to what is rendered: it waits for the render
const SKIP_S = 5;

const $ = (id) => document.getElementById(id);

// What each refusal of the replay API says (catalogue keys, by its code).
const PROBLEM_TEXT = {
  no_token: 'trainer.problem.no_token',
  unauthorized: 'trainer.problem.unauthorized',
  token_expired: 'trainer.problem.token_expired',
  forbidden: 'trainer.problem.forbidden',
  wrong_room: 'trainer.problem.wrong_room',
  stale_link: 'trainer.problem.stale_link',
  link_revoked: 'trainer.problem.link_revoked',
  not_found: 'trainer.problem.not_found',
  recording_in_progress: 'trainer.problem.recording_in_progress',
  tampered: 'trainer.problem.tampered',
  unreadable: 'trainer.problem.unreadable',
  unavailable: 'trainer.problem.unavailable',
  network: 'trainer.problem.network',
};

function problemText(code) {
  return tr(Object.hasOwn(PROBLEM_TEXT, code) ? PROBLEM_TEXT[code] : PROBLEM_TEXT.unavailable);
}

const TOKEN_PROBLEMS = new Set(['unauthorized', 'token_expired', 'forbidden', 'wrong_room', 'stale_link', 'link_revoked']);

const STATE_TEXT = {
  complete: 'trainer.state.complete',
  incomplete: 'trainer.state.incomplete',
  recording: 'trainer.state.recording',
  unreadable: 'trainer.state.unreadable',
  shredded: 'trainer.state.shredded',
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

// ---- formatting ---------------------------------------------------------------------

export function formatTime(seconds) {
  const s = Math.max(0, Math.floor(seconds + 1e-6));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

function formatCreated(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(currentLanguage(), {weekday: 'short', day: 'numeric', month: 'short', year: 'numeric',
    hour: '2-digit', minute: '2-digit'});
}

/** How a person is named once: "Mrs Chen · Patient"; their name alone when it only repeats the role. */
export function personLabel(person) {
  const role = roleName(person?.role);
  const name = (person?.name ?? '').trim();
  if (!name) return role || tr('trainer.unknown_participant');
  const same = (a, b) => Boolean(a) && a.localeCompare(b, undefined, {sensitivity: 'base'}) === 0;
  if (!role || same(name, role) || same(name, person.role)) return name;
  return tr('trainer.person', {name, role});
}

function initials(name) {
  return (name ?? '').split(/\s+/).filter(Boolean).slice(0, 2).map((w) => Array.from(w)[0].toUpperCase()).join('');
}

const round1 = (x) => (typeof x === 'number' ? x.toFixed(1) : '—');

/** Index of the last item with at_ms <= ms in a list sorted by at_ms, or -1. */
function lastAtOrBefore(items, ms) {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].at_ms <= ms) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

// ---- face anchors (annotate/anchoring.py: A + u·(B − A) + v·(C − A) on triangle t) -------

const POINT_FIELDS = {circle: ['center', 'edge'], arrow: ['from', 'to'], text: ['at']};

function resolveFaceShape(shape, landmarks, triangles) {
  const resolve = ([t, u, v]) => {
    const corners = triangles[t]?.map((i) => landmarks[i]);
    if (!corners || corners.some((p) => !p)) return null;
    const [a, b, c] = corners;
    return [a[0] + u * (b[0] - a[0]) + v * (c[0] - a[0]), a[1] + u * (b[1] - a[1]) + v * (c[1] - a[1])];
  };
  const out = {...shape, anchor: 'screen'};
  if (shape.kind === 'freehand') {
    out.points = shape.points.map(resolve);
    if (out.points.some((p) => !p)) return null;
  } else {
    for (const name of POINT_FIELDS[shape.kind] ?? []) {
      out[name] = resolve(shape[name]);
      if (!out[name]) return null;
    }
  }
  return out;
}

// ---- one participant's media --------------------------------------------------------

class TrackView {
  /** hooks: onError(track), refreshUrls() -> Promise of {media, status}, onChange(track). */
  constructor(media, participant, hooks) {
    this.key = media.key;
    this.media = media;
    this.hooks = hooks;
    this.participant = participant ?? {name: tr('trainer.unknown_participant'), role: null};
    this.ids = new Set(this.participant.ids ?? [media.key]);  // the participant ids of their joins
    // When they were in the call, on the recording's timeline (none known: all along).
    this.joins = (this.participant.joins ?? []).map((j) => [j.from_ms / 1000, j.to_ms == null ? Infinity : j.to_ms / 1000]);
    this.start = media.start_ms / 1000;
    this.hasVideo = media.kinds.includes('video');
    this.retries = 0;
    this.urls = {media: media.url, status: media.status_url};
    this._starting = false;
    this.blocked = false;

    const tile = document.createElement('figure');
    tile.className = 'tile replay-tile';
    tile.dataset.key = this.key;
    tile.dataset.role = this.participant.role ?? '';
    tile.classList.toggle('tile-audio-only', !this.hasVideo);
    tile.innerHTML = `
      <div class="tile-placeholder">
        <span class="tile-initials" aria-hidden="true"></span>
        <span class="tile-absence"></span>
      </div>
      <figcaption class="tile-label">
        <span class="tile-name"></span>
        <span class="tile-preparing" aria-live="polite"></span>
      </figcaption>`;
    tile.querySelector('.tile-initials').textContent = initials(this.participant.name);
    const video = document.createElement('video');
    video.className = 'replay-video';
    video.preload = 'auto';
    video.playsInline = true;
    video.disableRemotePlayback = true;
    video.dataset.key = this.key;
    video.dataset.name = this.participant.name ?? '';
    video.dataset.role = this.participant.role ?? '';
    video.addEventListener('error', () => hooks.onError(this));
    // Running: playing and producing frames ('playing' comes once playback has really
    // started, 'waiting' when it ran out of data).
    this.running = false;
    video.addEventListener('playing', () => { this.running = true; });
    for (const type of ['waiting', 'pause', 'seeking', 'emptied', 'ended']) {
      video.addEventListener(type, () => { this.running = false; });
    }
    tile.prepend(video);
    this.tile = tile;
    this.video = video;
    this.relabel();
    this.attach();
  }

  /** The texts of the tile in the page's language (again after a change of language). */
  relabel() {
    const person = personLabel(this.participant);
    const name = this.tile.querySelector('.tile-name');
    name.textContent = person;
    name.title = person;  // the whole of it, should a very long name still have to wrap
    this.tile.querySelector('.tile-label').setAttribute('aria-label', person);
    (this.video ?? this.tile.querySelector('video'))?.setAttribute(
      'aria-label', tr(this.hasVideo ? 'trainer.media_of.video' : 'trainer.media_of.sound', {person}));
    this._absence = null;
    if (this.source) this._renderPreparation();
  }

  /** A fresh MediaSource on the element, fed the watermarked replay (again after a media error). */
  attach() {
    this.source?.destroy();
    this.source = new ReplaySource(this.video, {
      urls: this.urls,
      mime: this.media.mime,
      refreshUrls: () => this.hooks.refreshUrls(this),
      onChange: () => this._renderPreparation(),
    });
    this._renderPreparation();
  }

  setUrls(urls) {
    this.urls = urls;
    this.source.setUrls(urls);
  }

  /** True while the clock at `t` (or this file's start, if it starts later) is past what is rendered. */
  isPreparing(t) {
    const s = this.source;
    if (s.state !== 'queued' && s.state !== 'rendering') return false;
    const local = Math.max(0, t - this.start);
    const d = this.duration;
    return (d === null || local < d) && s.readyUntil < local + PREPARED_MARGIN_S;
  }

  _renderPreparation() {
    const s = this.source;
    const label = this.tile.querySelector('.tile-preparing');
    let text = '';
    if (s.state === 'queued') text = tr('trainer.preparing');
    else if (s.state === 'rendering') text = tr('trainer.preparing_percent', {percent: Math.floor(s.progress * 100)});
    else if (s.state === 'failed') text = tr('trainer.cannot_show');
    if (label.textContent !== text) label.textContent = text;
    this.tile.dataset.render = s.state;
    if (s.state === 'failed') {
      this.tile.querySelector('.tile-absence').textContent = tr('trainer.video_failed');
      this.hooks.onChange?.(this);
    }
  }

  get duration() {
    const d = this.video.duration;
    return Number.isFinite(d) ? d : null;
  }

  /** Where the file ends on the recording's timeline (seconds), once known. */
  get end() {
    return this.duration === null ? null : this.start + this.duration;
  }

  isActive(t) {
    const local = t - this.start;
    if (local < 0) return false;
    const d = this.duration;
    return d === null || local < d;
  }

  /** Whether the person was connected at `t` (their file plays across their joins: between two, not). */
  isConnected(t) {
    if (!this.joins.length) return true;
    return this.joins.some(([from, to]) => from - JOIN_MARGIN_S <= t && t < to + JOIN_MARGIN_S);
  }

  /** True while it should play at `t` but has not got the data to. */
  isWaiting(t) {
    const v = this.video;
    if (v.error || !this.isActive(t)) return false;
    const d = this.duration;
    if (d !== null && t - this.start > d - 0.25) return false;  // at its very end
    return v.readyState < HTMLMediaElement.HAVE_FUTURE_DATA || v.seeking;
  }

  /** What the tile says instead of the picture at `t`, or null while the person is there. */
  _absenceAt(t) {
    const local = t - this.start;
    if (this.isActive(t) && this.isConnected(t)) return null;
    if (local < 0 || (this.joins.length && t < this.joins[0][0])) return 'trainer.absence.before';
    if (!this.isActive(t) || this.joins.every(([, to]) => to <= t)) return 'trainer.absence.after';
    return 'trainer.absence.gap';
  }

  /**
   * Follows the clock at `t`. mode: 'play' (running: correct drift), 'start' (get
   * playing from where the clock is, no correction yet), 'hold' or 'pause' (stand
   * still on the clock's frame).
   */
  sync(t, mode, rate) {
    const v = this.video;
    const local = t - this.start;
    const active = this.isActive(t);
    const absence = this._absenceAt(t);
    this.tile.classList.toggle('is-absent', absence !== null);
    this.tile.dataset.absence = absence ?? '';
    if (absence !== this._absence) {
      this._absence = absence;
      if (absence) this.tile.querySelector('.tile-absence').textContent = tr(absence);
    }
    if (!active) {
      if (!v.paused) v.pause();
      // Parked at its start, so it is ready when the clock gets there.
      if (local < 0 && v.readyState >= HTMLMediaElement.HAVE_METADATA && !v.seeking && v.currentTime > 0.05) {
        v.currentTime = 0;
      }
      return;
    }
    if (!this.hasVideo && !absence) this.tile.querySelector('.tile-absence').textContent = tr('trainer.sound_only');
    if (v.error || v.readyState < HTMLMediaElement.HAVE_METADATA) return;  // cannot seek yet
    const drift = v.currentTime - local;
    const heard = Math.abs(drift) / rate;  // how far apart it sounds and looks
    const playing = mode === 'play' || mode === 'start';
    if (!v.seeking) {
      if (mode === 'play' ? heard > RESYNC_S : !this.running && Math.abs(drift) > PAUSED_SNAP_S) {
        v.currentTime = local;
      }
    }
    const nudge = mode === 'play' && !v.seeking && heard > NUDGE_S && heard <= RESYNC_S;
    const wanted = nudge ? rate * (drift > 0 ? 1 - NUDGE : 1 + NUDGE) : rate;
    if (v.playbackRate !== wanted) v.playbackRate = wanted;
    if (playing && v.paused && !this._starting) {
      this._starting = true;
      v.play().then(() => { this.blocked = false; }, (err) => {
        if (err.name === 'NotAllowedError') this.blocked = true;
      }).finally(() => { this._starting = false; });
    } else if (!playing && !v.paused) {
      v.pause();
    }
  }

  state(t) {
    const v = this.video;
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    return {
      key: this.key, name: this.participant.name, role: this.participant.role, label: personLabel(this.participant),
      absence: this._absence ?? null, start: this.start,
      duration: this.duration, currentTime: v.currentTime, paused: v.paused, readyState: v.readyState,
      seeking: v.seeking, running: this.running, active: this.isActive(t),
      drift: this.isActive(t) ? v.currentTime - (t - this.start) : null,
      videoWidth: v.videoWidth, frames: q ? q.totalVideoFrames : null, error: v.error ? v.error.code : null,
      playbackRate: v.playbackRate,
      render: {state: this.source.state, progress: this.source.progress, watermark: this.source.watermark,
        statesSeen: [...this.source.statesSeen], error: this.source.error},
    };
  }

  destroy() {
    this.source.destroy();
    this.video.pause();
    this.video.removeAttribute('src');
    this.video.load();  // lets go of the media and its connection
    this.tile.remove();
  }
}

// ---- the replay ---------------------------------------------------------------------

class Player {
  constructor(rec, api) {
    this.rec = rec;
    this.api = api;
    this.rate = 1;
    this.playing = false;
    this.phase = 'starting';  // while playing: starting | running | stalled
    this._phaseSince = performance.now();
    this._base = {time: 0, wall: performance.now()};
    this.duration = rec.duration_ms / 1000;
    this.urlsExpireAt = rec.urls_expire_at;
    this._refreshing = null;
    this._dragging = false;

    // participant id (one per join) -> the person
    this.participants = new Map(rec.participants.flatMap((p) => (p.ids ?? [p.id]).map((id) => [id, p])));
    this.names = new Map(rec.participants.map((p) => [p.identity, p.name]));
    const events = rec.events;
    const isAnnotation = (e) => e.event.type === 'annotation' || e.event.type === 'annotation-snapshot';
    this.annotationEvents = events.filter(isAnnotation)
      .map((e, i) => ({...e, i}))
      .sort((a, b) => a.at_ms - b.at_ms || (a.event.version ?? 0) - (b.event.version ?? 0) || a.i - b.i);
    const analysis = (kind) => events.filter((e) => e.event.type === 'analysis' && e.event.kind === kind);
    this.guidance = analysis('guidance');
    this.metrics = analysis('face-metrics');
    this.triangles = rec.face_triangles ?? null;
    this.board = new Map();
    this._boardIndex = -1;
    this._drawnKey = null;

    const stage = $('stage');
    stage.replaceChildren();
    const media = [...rec.media].sort((a, b) => byRole(ROLE_ORDER)(a.participant ?? {}, b.participant ?? {}));
    this.tracks = media.map((m) => new TrackView(m, m.participant, {
      onError: (track) => this._mediaFailed(track),
      refreshUrls: (track) => this._refreshUrls().then((fresh) => fresh.urlsFor(track.key)),
      onChange: (track) => {
        // The join token itself expired or was refused: the whole page says so, as for any API call.
        if (track.source.state === 'failed' && TOKEN_PROBLEMS.has(track.source.error?.code)) {
          showProblem(track.source.error.code);
          return;
        }
        this.tick();
      },
    }));
    this.overlays = [];
    for (const track of this.tracks) {
      stage.append(track.tile);
      track.video.addEventListener('loadedmetadata', () => this._metadata());
      if (track.participant.role === 'patient' && track.hasVideo) {
        const overlay = new AnnotationOverlay(track.tile, {
          shapes: () => this._shapesFor(track),
          label: (n) => tn('annotation.patient_marks', n),
          before: track.tile.querySelector('.tile-placeholder'),
        });
        overlay.setVideo(track.video);
        overlay.track = track;
        this.overlays.push(overlay);
      }
    }
    if (!this.tracks.length) $('status').textContent = tr('trainer.no_media');

    this._buildEventLog();
    this._bindControls();
    this._metadata();
    this._timer = setInterval(() => this.tick(), TICK_MS);
    this._urlTimer = setInterval(() => {
      if (Date.now() / 1000 > this.urlsExpireAt - URL_REFRESH_MARGIN_S) this._refreshUrls().catch(() => {});
    }, 15_000);
    this.tick();
  }

  // -- the master clock --

  now() {
    if (!this.playing || this.phase !== 'running') return this._base.time;
    return this._base.time + ((performance.now() - this._base.wall) / 1000) * this.rate;
  }

  get stalled() {
    return this.playing && this.phase === 'stalled';
  }

  _rebase(time) {
    this._base = {time, wall: performance.now()};
  }

  _setPhase(phase) {
    this.phase = phase;
    this._phaseSince = performance.now();
  }

  play() {
    let t = this.now();
    if (t >= this.duration - 0.05) t = 0;
    this._rebase(t);
    this.playing = true;
    this._setPhase('starting');
    this.tick();
  }

  pause() {
    this._rebase(this.now());
    this.playing = false;
    this.tick();
  }

  toggle() {
    if (this.playing) this.pause();
    else this.play();
  }

  seek(seconds) {
    this._rebase(Math.min(Math.max(0, seconds), this.duration));
    this._setPhase('starting');
    this.tick();
  }

  setRate(rate) {
    this._rebase(this.now());
    this.rate = rate;
    for (const button of document.querySelectorAll('#speeds button')) {
      button.setAttribute('aria-pressed', String(Number(button.dataset.rate) === rate));
    }
    this.tick();
  }

  tick() {
    let t = this.now();
    if (t >= this.duration && this.playing) {
      t = this.duration;
      this._rebase(t);
      this.playing = false;
    }
    if (this.playing) t = this._advancePhase(t);
    const mode = !this.playing ? 'pause' : {starting: 'start', running: 'play', stalled: 'hold'}[this.phase];
    for (const track of this.tracks) track.sync(t, mode, this.rate);
    this._renderTime(t);
    this._renderAnnotations(t);
    this._renderAnalysis(t);
    this._renderEventLog(t);
    document.body.toggleAttribute('data-buffering', this.stalled);
    const blocked = this.tracks.some((track) => track.blocked);
    const preparing = this.tracks.filter((track) => track.isPreparing(t));
    let status = this.stalled ? tr('trainer.loading') : blocked ? tr('trainer.sound_blocked') : '';
    if (preparing.length) {
      const progress = Math.min(...preparing.map((track) => track.source.progress));
      status = tr('trainer.preparing_all', {percent: Math.floor(progress * 100)});
      this.preparingShown = true;
    }
    if ($('status').textContent !== status) $('status').textContent = status;
  }

  /** Moves between starting, running and stalled; returns the clock's time after it. */
  _advancePhase(t) {
    const active = this.tracks.filter((track) => track.isActive(t) && !track.video.error);
    if (this.phase === 'starting') {
      const started = active.every((track) => track.running && !track.video.seeking);
      if (started || performance.now() - this._phaseSince > START_TIMEOUT_MS) {
        // Start the clock from where the elements are (they took a moment to start).
        const running = active.filter((track) => track.running);
        const at = running.length
          ? running.reduce((sum, track) => sum + track.start + track.video.currentTime, 0) / running.length
          : t;
        this._rebase(Math.abs(at - t) < 1 ? at : t);
        this._setPhase('running');
        return this.now();
      }
    } else if (this.phase === 'running') {
      if (active.some((track) => track.isWaiting(t))) {
        this._rebase(t);
        this._setPhase('stalled');
      }
    } else if (!active.some((track) => track.isWaiting(t))) {  // stalled, and the data is there
      this._setPhase('starting');
    }
    return t;
  }

  // -- rendering --

  _metadata() {
    const ends = this.tracks.map((track) => track.end).filter((end) => end !== null);
    const duration = Math.max(this.rec.duration_ms / 1000, ...ends);
    if (duration !== this.duration || !this._markersDrawn) {
      this.duration = duration;
      this._renderMarkers();
    }
    $('seek').max = String(Math.round(this.duration * 1000));
  }

  _renderTime(t) {
    const button = $('play');
    button.classList.toggle('is-playing', this.playing);
    button.setAttribute('aria-label', tr(this.playing ? 'trainer.pause' : 'trainer.play'));
    $('clock').textContent = `${formatTime(t)} / ${formatTime(this.duration)}`;
    if (!this._dragging) $('seek').value = String(Math.round(t * 1000));
    $('seek').setAttribute('aria-valuetext', tr('trainer.seek_value', {time: formatTime(t), duration: formatTime(this.duration)}));
  }

  _renderMarkers() {
    this._markersDrawn = true;
    const markers = [];
    const mark = (item, kind) => {
      if (!this.duration) return;
      const span = document.createElement('span');
      span.dataset.kind = kind;
      span.style.left = `${Math.min(100, (item.at_ms / 1000 / this.duration) * 100)}%`;
      if (kind === 'annotation') span.style.background = item.event.shape?.color ?? '';
      markers.push(span);
    };
    for (const item of this.annotationEvents) if (item.event.op === 'add') mark(item, 'annotation');
    $('markers').replaceChildren(...markers);
  }

  /** The board at `ms`: the annotation events up to then, applied in order. */
  _boardAt(ms) {
    const events = this.annotationEvents;
    let i = this._boardIndex;
    if (i >= 0 && events[i].at_ms > ms) {  // went back: start over
      this.board = new Map();
      i = -1;
    }
    while (i + 1 < events.length && events[i + 1].at_ms <= ms) {
      i += 1;
      const event = events[i].event;
      if (event.type === 'annotation-snapshot') {
        // a large drawing is recorded in parts: part 0 replaces the board, later parts add to it
        if (!event.part) this.board = new Map();
        for (const shape of event.shapes ?? []) this.board.set(shape.id, shape);
      } else if (event.op === 'add' && event.shape?.id) {
        this.board.delete(event.shape.id);  // a re-used id goes on top
        this.board.set(event.shape.id, event.shape);
      } else if (event.op === 'undo' || event.op === 'clear') {
        for (const id of event.ids ?? []) this.board.delete(id);
      }
    }
    this._boardIndex = i;
    return i;
  }

  _landmarksAt(track, ms) {
    for (let i = lastAtOrBefore(this.metrics, ms); i >= 0; i -= 1) {
      const item = this.metrics[i];
      if (ms - item.at_ms > LANDMARKS_STALE_MS) return null;
      if (!track.ids.has(item.event.participant)) continue;
      return {index: i, landmarks: item.event.face?.landmarks ?? null};
    }
    return null;
  }

  _shapesFor(track) {
    const shapes = [];
    const ms = this._nowMs ?? 0;
    const face = this.triangles ? this._landmarksAt(track, ms) : null;
    for (const shape of this.board.values()) {
      if ((shape.anchor ?? 'screen') === 'screen') {
        shapes.push(shape);
      } else if (face?.landmarks) {
        const resolved = resolveFaceShape(shape, face.landmarks, this.triangles);
        if (resolved) shapes.push(resolved);
      }
      // else: no face at this moment, the mark is not drawn (as in the export)
    }
    return shapes;
  }

  _renderAnnotations(t) {
    const ms = t * 1000;
    this._nowMs = ms;
    const index = this._boardAt(ms);
    const hasFace = [...this.board.values()].some((s) => s.anchor === 'face');
    const faceKeys = hasFace ? this.overlays.map((o) => this._landmarksAt(o.track, ms)?.index ?? -1).join(',') : '';
    const key = `${index}|${faceKeys}`;
    if (key !== this._drawnKey) {
      this._drawnKey = key;
      for (const overlay of this.overlays) overlay.redraw();
    }
  }

  _renderAnalysis(t) {
    const ms = t * 1000;
    const g = this.guidance[lastAtOrBefore(this.guidance, ms)];
    const guidance = $('guidance');
    const prompt = g ? `prompt.${g.event.prompt}` : null;
    const text = !g ? '—' : hasText(prompt) ? tr(prompt) : g.event.text ?? '—';
    if (guidance.textContent !== text) guidance.textContent = text;
    guidance.dataset.prompt = g?.event.prompt ?? '';

    const m = this.metrics[lastAtOrBefore(this.metrics, ms)];
    const fresh = m && ms - m.at_ms <= METRICS_STALE_MS ? m.event : null;
    const key = fresh ? m.at_ms : null;
    if (key === this._metricsKey) return;
    this._metricsKey = key;
    const rows = [];
    const row = (label, value) => {
      const dt = document.createElement('dt');
      dt.textContent = label;
      const dd = document.createElement('dd');
      dd.textContent = value;
      rows.push(dt, dd);
    };
    if (!fresh) {
      row(tr('trainer.metric.face'), '—');
    } else if (!fresh.face) {
      row(tr('trainer.metric.face'), tr('trainer.metric.face_not_found'));
    } else {
      const {pose, framing, sharpness, exposure} = fresh.face;
      row(tr('analysis.metric.yaw'), `${round1(pose?.yaw)}°`);
      row(tr('analysis.metric.pitch'), `${round1(pose?.pitch)}°`);
      row(tr('analysis.metric.roll'), `${round1(pose?.roll)}°`);
      if (framing) {
        row(tr('trainer.metric.face_height'),
          tr('trainer.metric.face_height_value', {percent: Math.round((framing.height ?? 0) * 100)}));
      }
      row(tr('analysis.metric.sharpness'), round1(sharpness));
      if (exposure) {
        row(tr('analysis.metric.exposure'), tr('trainer.metric.exposure_value',
          {median: Math.round(exposure.p50 ?? 0), clipped: round1((exposure.clipped ?? 0) * 100)}));
      }
      if (fresh.cast) row(tr('analysis.metric.cast'), round1(fresh.cast.chroma));
    }
    $('metrics').replaceChildren(...rows);
  }

  _describe(event) {
    const person = (id) => this.participants.get(id);
    const who = (identity) => this.names.get(identity) ?? identity ?? tr('trainer.event.someone');
    const drew = {freehand: 'trainer.event.drew.freehand', circle: 'trainer.event.drew.circle',
                  arrow: 'trainer.event.drew.arrow'};
    switch (event.type) {
      case 'recording':
        if (event.state !== 'on') return tr('trainer.event.recording_stopped');
        return event.by ? tr('trainer.event.recording_started_by', {name: event.by}) : tr('trainer.event.recording_started');
      case 'participant-joined':
        return tr('trainer.event.joined', {person: personLabel(event.participant)});
      case 'consent': {
        const p = person(event.participant);
        const name = p ? p.name : tr('trainer.event.a_participant');
        return tr(event.given ? 'trainer.event.consent_given' : 'trainer.event.consent_refused', {name});
      }
      case 'participant-left': {
        const p = person(event.participant_id);
        return tr('trainer.event.left', {name: p ? p.name : tr('trainer.event.a_participant')});
      }
      case 'annotation':
        if (event.op === 'add') {
          const s = event.shape ?? {};
          if (s.kind === 'text') return tr('trainer.event.wrote', {name: who(event.author), text: s.text});
          return tr(Object.hasOwn(drew, s.kind) ? drew[s.kind] : 'trainer.event.drew', {name: who(event.author)});
        }
        if (event.op === 'undo') return tr('trainer.event.undid', {name: who(event.author)});
        if (event.op === 'clear') return tn('trainer.event.cleared', event.ids?.length ?? 0, {name: who(event.author)});
        return null;
      case 'analysis':
        if (event.kind === 'guidance') {
          const prompt = `prompt.${event.prompt}`;
          return tr('trainer.event.guidance', {text: hasText(prompt) ? tr(prompt) : event.text});
        }
        if (event.kind === 'still') return tr('trainer.event.photo', {pose: poseLabel(event.pose)});
        return null;
      default:
        return null;
    }
  }

  /** Every text of the player in the page's language, after a change of language. */
  relabel() {
    for (const track of this.tracks) track.relabel();
    this._metricsKey = undefined;
    this._buildEventLog();
    this.tick();
  }

  _buildEventLog() {
    this.logItems = [];
    const items = [];
    for (const item of this.rec.events) {
      const text = this._describe(item.event);
      if (!text) continue;
      const li = document.createElement('li');
      const button = document.createElement('button');
      button.type = 'button';
      const time = document.createElement('time');
      time.textContent = formatTime(item.at_ms / 1000);
      const label = document.createElement('span');
      label.textContent = text;
      button.append(time, label);
      button.addEventListener('click', () => this.seek(item.at_ms / 1000));
      li.append(button);
      li.dataset.type = item.event.type;
      items.push(li);
      this.logItems.push({at_ms: item.at_ms, li});
      if (items.length >= 1000) break;
    }
    $('events').replaceChildren(...items);
    this._logIndex = null;
  }

  _renderEventLog(t) {
    const index = lastAtOrBefore(this.logItems, t * 1000);
    if (index === this._logIndex) return;
    this._logIndex = index;
    this.logItems.forEach(({li}, i) => {
      li.classList.toggle('is-future', i > index);
      if (i === index) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    });
  }

  // -- controls --

  _bindControls() {
    const seek = $('seek');
    this._controls = new AbortController();
    const {signal} = this._controls;
    $('play').addEventListener('click', () => this.toggle(), {signal});
    seek.addEventListener('input', () => this.seek(Number(seek.value) / 1000), {signal});
    seek.addEventListener('pointerdown', () => { this._dragging = true; }, {signal});
    window.addEventListener('pointerup', () => { this._dragging = false; }, {signal});
    for (const button of document.querySelectorAll('#speeds button')) {
      button.addEventListener('click', () => this.setRate(Number(button.dataset.rate)), {signal});
    }
    this.setRate(1);
    document.addEventListener('keydown', (event) => {
      if (event.target.closest?.('button, input, a, select, textarea')) return;
      if (event.key === ' ') {
        event.preventDefault();
        this.toggle();
      } else if (event.key === 'ArrowLeft' || event.key === 'ArrowRight') {
        event.preventDefault();
        this.seek(this.now() + (event.key === 'ArrowLeft' ? -SKIP_S : SKIP_S));
      }
    }, {signal});
  }

  // -- signed URLs expire: fresh ones on demand --

  /** Fresh signed URLs for every track (each track's source fetches with its own copy). */
  _refreshUrls() {
    if (!this._refreshing) {
      this._refreshing = this.api(`/api/replay/recordings/${encodeURIComponent(this.rec.id)}/urls`)
        .then((fresh) => {
          this.urlsExpireAt = fresh.urls_expire_at;
          fresh.urlsFor = (key) => ({media: fresh.urls[key], status: fresh.status_urls[key]});
          for (const track of this.tracks) track.setUrls(fresh.urlsFor(track.key));
          return fresh;
        })
        .finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  _mediaFailed(track) {
    // The element could not decode what it was given: start it over on a fresh MediaSource.
    if (track.retries >= MAX_MEDIA_RETRIES) {
      track.tile.querySelector('.tile-absence').textContent = tr('trainer.video_failed');
      return;
    }
    track.retries += 1;
    track.attach();  // the next tick seeks it to the clock
  }

  state() {
    const t = this.now();
    return {
      id: this.rec.id, time: t, duration: this.duration, playing: this.playing, phase: this.phase,
      stalled: this.stalled,
      rate: this.rate, tracks: this.tracks.map((track) => track.state(t)),
      board: [...this.board.keys()],
      overlays: this.overlays.map((o) => ({key: o.track.key, shapes: o.canvas.dataset.shapes,
        drawn: o.canvas.dataset.drawn, frame: o.canvas.dataset.frame ?? null})),
      guidance: $('guidance').textContent,
      status: $('status').textContent, preparingShown: Boolean(this.preparingShown),
    };
  }

  destroy() {
    clearInterval(this._timer);
    clearInterval(this._urlTimer);
    this._controls.abort();
    for (const overlay of this.overlays) overlay.destroy();
    for (const track of this.tracks) track.destroy();
    document.body.removeAttribute('data-buffering');
  }
}

// ---- the page -------------------------------------------------------------------------

const token = takeTokenFromHash();
await initLanguage({token});
bindLanguageSwitch($('language'));
const page = {player: null, recordings: null, state: () => page.player?.state() ?? null};
window.trainer = page;

async function api(path) {
  let response;
  try {
    response = await fetch(path, {headers: {Authorization: `Bearer ${token}`}, cache: 'no-store'});
  } catch {
    throw new ApiError(0, 'network', '');
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body?.error ?? 'unavailable', body?.message);
  return body;
}

function showView(view) {
  document.body.dataset.view = view;
  $('list-view').hidden = view !== 'list';
  $('player-view').hidden = view !== 'player';
  $('problem').hidden = view !== 'problem';
  $('back').hidden = view !== 'player';
}

function showProblem(code, message) {
  if (TOKEN_PROBLEMS.has(code)) forgetToken();  // a reload must not retry a link that cannot work
  page.player?.destroy();
  page.player = null;
  $('problem-text').textContent = problemText(code);
  $('problem').dataset.code = code;
  $('status').textContent = '';
  showView('problem');
}

async function showList() {
  page.player?.destroy();
  page.player = null;
  document.title = tr('trainer.title');
  $('title').textContent = tr('trainer.title');
  $('status').textContent = tr('trainer.loading');
  let listing;
  try {
    listing = await api('/api/replay/recordings');
  } catch (err) {
    showProblem(err.code, err.message);
    return;
  }
  page.listing = listing;
  page.recordings = listing.recordings;
  $('status').textContent = '';
  renderList(listing);
  showView('list');
}

function renderList(listing) {
  $('title').textContent = tr('trainer.title_room', {room: listing.room});
  const calls = listing.recordings.filter((rec) => rec.kind !== 'photos');
  const photos = listing.recordings.filter((rec) => rec.kind === 'photos');
  // part 2 (3, …) of a recording that carried on after its call moved: id -> the parts that continue it
  const byId = new Map(calls.map((rec) => [rec.id, rec]));
  const continuedBy = new Map();
  for (const rec of calls) {
    if (rec.continues && byId.has(rec.continues)) continuedBy.set(rec.continues, rec);
  }
  $('recordings').replaceChildren(...calls.map((rec) => recordingItem(rec, byId, continuedBy)));
  $('list-empty').hidden = calls.length > 0;
  $('photo-sets').replaceChildren(...photos.map(photoSetItem));
  $('photo-sets-view').hidden = photos.length === 0;
}

function headline(rec) {
  const when = document.createElement('p');
  when.className = 'recording-when';
  when.textContent = formatCreated(rec.created);
  const state = document.createElement('span');
  state.className = 'recording-state';
  state.textContent = Object.hasOwn(STATE_TEXT, rec.state) ? tr(STATE_TEXT[rec.state]) : rec.state;
  when.append(state);
  return when;
}

/** A link to another item of the list (another part of the same recording). */
function partLink(text, target) {
  const a = document.createElement('a');
  a.className = 'part-link';
  a.href = `#recording-${target.id}`;
  a.textContent = text;
  a.addEventListener('click', (event) => {
    event.preventDefault();  // the address keeps no fragment: the page reads its token from there
    const item = document.getElementById(`recording-${target.id}`);
    item?.scrollIntoView({block: 'nearest'});
    item?.focus();
  });
  return a;
}

function recordingItem(rec, byId, continuedBy) {
  const li = document.createElement('li');
  li.className = 'recording';
  li.id = `recording-${rec.id}`;
  li.tabIndex = -1;
  li.dataset.id = rec.id;
  li.dataset.state = rec.state;
  li.dataset.part = String(rec.part ?? 1);
  const info = document.createElement('div');
  const when = headline(rec);
  const next = continuedBy.get(rec.id);
  const previous = rec.continues ? byId.get(rec.continues) : null;
  if ((rec.part ?? 1) > 1 || next) {
    const part = document.createElement('span');
    part.className = 'recording-part';
    part.textContent = tr('trainer.part', {part: rec.part ?? 1});
    when.append(part);
  }
  const meta = document.createElement('p');
  meta.className = 'recording-meta';
  const people = listText(rec.participants.map(personLabel));
  const parts = [rec.duration_ms != null ? formatTime(rec.duration_ms / 1000) : null, people || null];
  meta.textContent = parts.filter(Boolean).join(' · ') || tn('trainer.tracks', rec.tracks);
  info.append(when, meta);
  if (previous || next) {
    const links = document.createElement('p');
    links.className = 'recording-parts';
    if (previous) {
      links.append(partLink(tr('trainer.part_continues', {part: previous.part ?? 1,
        created: formatCreated(previous.created)}), previous));
    }
    if (next) {
      if (previous) links.append(' · ');
      links.append(partLink(tr('trainer.part_continued', {part: next.part ?? 2}), next));
    }
    info.append(links);
  }
  const open = document.createElement('button');
  open.type = 'button';
  open.className = 'button';
  open.textContent = tr('trainer.replay');
  open.disabled = !['complete', 'incomplete'].includes(rec.state);
  open.setAttribute('aria-label', tr('trainer.replay_of', {created: formatCreated(rec.created)}));
  open.addEventListener('click', () => openRecording(rec.id));
  li.append(info, open);
  return li;
}

/** A photo set (the stills of a guided capture): when, and how many; there is no video to replay. */
function photoSetItem(rec) {
  const li = document.createElement('li');
  li.className = 'recording photo-set';
  li.dataset.id = rec.id;
  li.dataset.state = rec.state;
  const info = document.createElement('div');
  const meta = document.createElement('p');
  meta.className = 'recording-meta';
  meta.textContent = rec.photos != null ? tn('trainer.photos', rec.photos) : tr('trainer.photo_set');
  info.append(headline(rec), meta);
  li.append(info);
  return li;
}

async function openRecording(id) {
  $('status').textContent = tr('trainer.opening');
  let rec;
  try {
    rec = await api(`/api/replay/recordings/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.code === 'recording_in_progress' || err.code === 'not_found') {
      $('status').textContent = problemText(err.code);
      return;
    }
    showProblem(err.code, err.message);
    return;
  }
  $('status').textContent = '';
  const title = tr('trainer.title_replay', {created: formatCreated(rec.created)});
  $('title').textContent = title;
  document.title = tr('trainer.tab_title', {title});
  showView('player');
  page.player = new Player(rec, api);
}

$('back').addEventListener('click', () => showList());
onLanguageChange(() => {
  const view = document.body.dataset.view;
  if (view === 'list' && page.listing) renderList(page.listing);
  else if (view === 'player' && page.player) {
    page.player.relabel();
    const title = tr('trainer.title_replay', {created: formatCreated(page.player.rec.created)});
    $('title').textContent = title;
    document.title = tr('trainer.tab_title', {title});
  } else if (view === 'problem') $('problem-text').textContent = problemText($('problem').dataset.code);
});
if (token) showList();
else showProblem('no_token');
