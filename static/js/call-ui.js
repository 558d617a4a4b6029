/**
 * Page pieces shared by the patient page and the doctor/expert console: token
 * handling, plain-language messages, call controls and the remote video tiles.
 */

import {applyTranslations, onLanguageChange, roleName, t} from './i18n.js';
import {icon, labelledIcon} from './icons.js';

// The tab keeps its join token so a reload rejoins (the first thing a patient tries);
// sessionStorage is per tab and gone when the tab closes.
const TOKEN_KEY = `consult-sfu:token:${location.pathname}`;

/**
 * Reads the join token from `#token=…` and removes it from the address bar at
 * once, so it is not copied along with the URL or left in the history. Without
 * one (a reload), the token this tab was opened with.
 */
export function takeTokenFromHash() {
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  history.replaceState(null, '', location.pathname + location.search);
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    return token || sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return token;  // storage disabled: a reload needs the link again
  }
}

/** After an end that rejoining cannot undo (kicked, closed, a bad link), a reload must not rejoin. */
export function forgetToken() {
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: nothing was kept
  }
}

/** A sort comparator putting participants in the order of `roles`; unknown roles last. */
export function byRole(roles) {
  const rank = (person) => {
    const index = roles.indexOf(person.role);
    return index === -1 ? roles.length : index;
  };
  return (a, b) => rank(a) - rank(b);
}

// Catalogue keys (i18n/locales) of what the pages say, by the code they say it for.
const STATE_TEXT = {
  connecting: 'state.connecting',
  connected: 'state.connected',
  reconnecting: 'state.reconnecting',
  closed: 'state.closed',
};

// What the empty video area says while there is no one to show.
const STAGE_TEXT = {
  connecting: 'stage.connecting',
  reconnecting: 'stage.reconnecting',
};

const END_TEXT = {
  'left': 'end.left',
  'kicked': 'end.kicked',
  'room-closed': 'end.room_closed',
  'replaced': 'end.replaced',
  'unauthorized': 'end.unauthorized',
  'token_expired': 'end.token_expired',
  'wrong_room': 'end.wrong_room',
  'stale_link': 'end.stale_link',
  'link_revoked': 'end.link_revoked',
  'room_full': 'end.room_full',
  'bad_message': 'end.bad_message',
  'no_token': 'end.no_token',
};

// Over a remote tile while the server has paused that video to us alone (our downlink
// is too weak for it; see client.pausedVideo), by reason. Its sound keeps playing.
const PAUSED_VIDEO_TITLE = {'weak-connection': 'tile.paused.weak_connection'};

/** Ends after which joining again with the same link makes sense. */
const REJOINABLE_ENDS = new Set(['left', 'replaced']);
/** Ends of a call that was under way; any other end is a link that never let the person in. */
const CALL_ENDS = new Set(['left', 'kicked', 'room-closed', 'replaced']);

function endText(reason) {
  return t(Object.hasOwn(END_TEXT, reason) ? END_TEXT[reason] : 'end.room_closed');
}

/**
 * Shows the "call ended" panel with the reason in plain language. Both pages have
 * the elements #banner, #ended, #ended-text and #rejoin.
 */
export function showEnded(reason) {
  if (!REJOINABLE_ENDS.has(reason)) forgetToken();
  const banner = document.getElementById('banner');
  showConnectionState(banner, 'closed');
  // "Call ended" only for a call there was; a bad link says it could not join.
  const title = CALL_ENDS.has(reason) ? 'end.title' : 'end.title_not_joined';
  for (const element of [banner, document.getElementById('ended-title')]) {
    element.dataset.i18n = title;
    element.textContent = t(title);
  }
  const text = document.getElementById('ended-text');
  text.dataset.i18n = Object.hasOwn(END_TEXT, reason) ? END_TEXT[reason] : 'end.room_closed';
  text.textContent = endText(reason);
  document.getElementById('rejoin').hidden = !REJOINABLE_ENDS.has(reason);
  document.getElementById('ended').hidden = false;
}

/**
 * Shows a connection state on <body data-connection-state> and in the banner. `quality`
 * (a ConnectionQuality): while connected but with no one's media arriving, the banner
 * already says "Reconnecting" (a dropped network shows there in about two seconds; the
 * connection itself notices after several, and then reconnects).
 */
export function showConnectionState(banner, state, quality = null) {
  document.body.dataset.connectionState = state;
  const mediaLost = state === 'connected' && Boolean(quality?.allLost());
  document.body.dataset.mediaLost = String(mediaLost);
  const key = mediaLost ? STATE_TEXT.reconnecting
    : state === 'connected' && document.body.dataset.media === 'problem'
      ? 'state.connected_no_camera' : STATE_TEXT[state];
  banner.dataset.i18n = key;  // kept in the page's language when it changes
  banner.textContent = t(key);
}

/**
 * Explains an empty video area: connecting, reconnecting, or (connected, nobody
 * else here yet) the page's `waiting` text (a catalogue key). Hidden once there is
 * someone to show.
 */
export function showStageMessage(element, client, waiting) {
  const key = client.state === 'connected' ? (client.participants.size === 0 ? waiting : null) : STAGE_TEXT[client.state];
  element.hidden = !key;
  if (key) {
    element.dataset.i18n = key;
    element.textContent = t(key);
  }
}

/**
 * Explains a getUserMedia failure in plain language. `audience` is the catalogue key of
 * who would see us, mid-sentence ("the doctor"); `hasAudio` says whether the microphone works.
 */
function mediaProblemText(err, {hasAudio, audience}) {
  const consequence = t(hasAudio ? 'media.consequence.hear_only' : 'media.consequence.neither', {audience: t(audience)});
  switch (err.name) {
    case 'NotAllowedError':
    case 'SecurityError': {
      const steps = platformSteps();
      const text = t(hasAudio ? 'media.blocked.camera' : 'media.blocked.both', {consequence});
      return steps ? `${text} ${t(steps)}` : text;
    }
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t(hasAudio ? 'media.not_found.camera' : 'media.not_found.both', {consequence});
    case 'NotReadableError':
    case 'AbortError':
      return t('media.in_use', {consequence});
    case 'NotSupportedError':
      return t('media.unsupported');
    default:
      return t('media.failed', {consequence});
  }
}

/** Where to allow the camera on this phone's system: a catalogue key, or null (a computer). */
function platformSteps() {
  const agent = navigator.userAgent;
  if (/iPhone|iPad|iPod/.test(agent) || (/Macintosh/.test(agent) && navigator.maxTouchPoints > 1)) {
    return 'media.steps.ios';
  }
  return /Android/.test(agent) ? 'media.steps.android' : null;
}

/**
 * Wires a mute toggle for 'audio' or 'video'. The visible label (catalogue keys) names
 * the action ("Mute" / "Unmute"), which is also the button's accessible name; the icon
 * (struck through by .is-off) shows the current state.
 */
export function bindMuteButton(button, client, kind, {muteLabel, unmuteLabel}) {
  const label = button.querySelector('.control-label');
  const update = () => {
    button.disabled = !client.localTrack(kind);
    button.classList.toggle('is-off', client.isOff(kind));
    label.textContent = t(client.muted[kind] ? unmuteLabel : muteLabel);
  };
  button.addEventListener('click', () => client.setMuted(kind, !client.muted[kind]));
  client.addEventListener('localmedia', update);
  onLanguageChange(update);
  update();
}

const LEAVE_CONFIRM_MS = 4_000;

/**
 * Wires the Leave button: the first press asks "Tap again to leave" for a few seconds, the
 * second leaves. A patient holding the phone to show their skin must not end the call by a
 * slip of the thumb.
 */
export function bindLeaveButton(button, client) {
  const label = button.querySelector('.control-label');
  let timer = null;
  const disarm = () => {
    clearTimeout(timer);
    timer = null;
    delete button.dataset.confirm;
    label.dataset.i18n = 'control.leave';
    label.textContent = t('control.leave');
  };
  button.addEventListener('click', () => {
    if (button.dataset.confirm === undefined) {
      button.dataset.confirm = '';
      label.dataset.i18n = 'control.leave_confirm';
      label.textContent = t('control.leave_confirm');
      timer = setTimeout(disarm, LEAVE_CONFIRM_MS);
      return;
    }
    disarm();
    client.leave();
  });
  client.addEventListener('statechange', () => {
    if (client.state === 'closed') disarm();
  });
}

/** Keeps the own preview on the local stream, mirrored like a mirror for the front camera. */
export function bindLocalPreview(client, video, frame) {
  const update = () => {
    // A stream without video never loads, and a loading media element holds up the
    // page's load event, so no camera means no srcObject. Reassigning the same
    // stream would restart the preview, so only on change.
    const stream = client.localTrack('video') ? client.localStream : null;
    if (video.srcObject !== stream) video.srcObject = stream;
    video.classList.toggle('mirrored', client.facingMode === 'user');
    frame.classList.toggle('camera-off', client.isOff('video'));
  };
  client.addEventListener('localmedia', update);
  update();
}

/** Wires the media problem box (text + Try again) and returns the function that starts media. */
export function bindMediaNotice(client, {box, text, retry, audience}) {
  let problem = null;
  const show = () => {
    box.hidden = !problem;
    // The banner must not stay a plain green "Connected" while nobody can see us.
    document.body.dataset.media = problem ? 'problem' : 'ok';
    if (client.state === 'connected') showConnectionState(document.getElementById('banner'), client.state);
    if (problem) text.textContent = mediaProblemText(problem, {hasAudio: Boolean(client.localTrack('audio')), audience});
  };
  const start = async () => {
    problem = await client.startMedia();
    show();
  };
  retry.addEventListener('click', start);
  onLanguageChange(show);
  return start;
}

/**
 * Wires the "turn on sound" button: shown when the browser refuses to play remote
 * media without a tap (the view then fires `playbackblocked`).
 */
export function bindSoundButton(button, view, client) {
  // Hidden at once: play() only settles when media flows, which for an idle track
  // may be never, while a refusal shows the button again straight away.
  const resume = () => {
    button.hidden = true;
    view.resumePlayback();
  };
  button.addEventListener('click', resume);
  // Browsers let pages that use the camera or microphone play sound on their own, so
  // playback refused before capture started works without a tap once it runs. Only
  // once: should the browser still refuse, retrying would loop.
  let autoResumed = false;
  const autoResume = () => {
    if (button.hidden || autoResumed || client.localStream.getTracks().length === 0) return;
    autoResumed = true;
    resume();
  };
  view.addEventListener('playbackblocked', () => {
    button.hidden = false;
    autoResume();
  });
  client.addEventListener('localmedia', autoResume);
}

/**
 * Renders one tile per remote participant into `container`: their video (if they
 * send any), a placeholder when the camera is off, a notice while the server has
 * paused their video to us, a name + role label, and one <audio> per audio track.
 * Video elements stay muted so sound never plays twice.
 * Fires `playbackblocked` when the browser wants a tap before playing; see
 * bindSoundButton.
 */
export class RemoteMediaView extends EventTarget {
  /**
   * roleOrder: roles in display order (first = largest tile); quality: a ConnectionQuality
   * (connection-quality.js) whose verdict each tile shows, or null; spotlight: each tile
   * gets a button that shows it large, the others in a row beneath (the console, where
   * the patient's picture is the work).
   */
  constructor(container, {roleOrder, quality = null, spotlight = false}) {
    super();
    this.container = container;
    this.quality = quality;
    this.spotlight = spotlight;
    this.spotlit = null;  // participant id shown large, or null
    this.compare = byRole(roleOrder);
    this.tiles = new Map();  // participant id -> tile element
  }

  render(client) {
    const media = client.remoteMedia();
    const people = [...client.participants.values()].sort(this.compare);
    const present = new Set(people.map((p) => p.id));
    for (const [id, tile] of this.tiles) {
      if (!present.has(id)) this._removeTile(id, tile);
    }
    if (!present.has(this.spotlit) || people.length < 2) this.spotlit = null;
    this.container.classList.toggle('has-spotlight', this.spotlit !== null);
    people.forEach((person, index) => {
      const tile = this.tiles.get(person.id) ?? this._createTile(person.id);
      this._updateTile(tile, person, media.filter((m) => m.participantId === person.id));
      this._updatePausedNotice(tile, client.pausedVideo.has(person.id), client.pausedVideo.get(person.id));
      this._updateQuality(tile, this.quality?.get(person.id) ?? null);
      this._updateSpotlight(tile, person, people.length > 1);
      // Move only tiles that are out of place, to leave playing videos alone.
      if (this.container.children[index] !== tile) {
        this.container.insertBefore(tile, this.container.children[index] ?? null);
      }
    });
  }

  /** Starts every remote video and audio again, e.g. after a tap. */
  resumePlayback() {
    for (const element of this.container.querySelectorAll('video, audio')) this._start(element);
  }

  _createTile(id) {
    const tile = document.createElement('figure');
    tile.className = 'tile';
    tile.dataset.participantId = id;
    tile.innerHTML = `
      <div class="tile-placeholder" aria-hidden="true">
        <span class="tile-initials"></span>
        <span data-i18n="tile.camera_off"></span>
      </div>
      <div class="tile-paused" role="status" aria-live="polite">
        <p class="tile-paused-notice"><span class="tile-paused-title"></span><span class="tile-paused-detail"></span></p>
      </div>
      <figcaption class="tile-label">
        <span class="tile-name"></span>
        <span class="tile-role"></span>
        <span class="tile-quality" role="status"></span>
      </figcaption>`;
    const micOff = labelledIcon('mic-off', t('tile.mic_off'));
    micOff.classList.add('mic-off-icon');
    micOff.dataset.i18nAttr = 'aria-label:tile.mic_off';
    micOff.querySelector('title').dataset.i18n = 'tile.mic_off';
    tile.querySelector('.tile-label').append(micOff);
    if (this.spotlight) {
      const pin = document.createElement('button');
      pin.type = 'button';
      pin.className = 'tile-pin';
      pin.append(icon('expand'));
      pin.addEventListener('click', () => {
        this.spotlit = this.spotlit === id ? null : id;
        this.dispatchEvent(new Event('spotlightchange'));
      });
      tile.append(pin);
    }
    applyTranslations(tile);
    this.tiles.set(id, tile);
    return tile;
  }

  _removeTile(id, tile) {
    for (const el of tile.querySelectorAll('video, audio')) el.srcObject = null;
    tile.remove();
    this.tiles.delete(id);
  }

  _updateTile(tile, person, media) {
    const video = media.find((m) => m.kind === 'video');
    tile.dataset.role = person.role;
    tile.classList.toggle('mic-off', Boolean(person.muted?.audio));
    tile.classList.toggle('camera-off', !video || Boolean(person.muted?.video));
    tile.querySelector('.tile-name').textContent = person.name;
    // A name that is only the role ("Doctor Doctor") says it once.
    const role = roleName(person.role);
    tile.querySelector('.tile-role').textContent = sameWords(person.name, role) ? '' : role;
    tile.querySelector('.tile-initials').textContent = initials(person.name);
    this._updateVideo(tile, person, video);
    this._updateAudio(tile, person, media.filter((m) => m.kind === 'audio'));
  }

  _updatePausedNotice(tile, paused, reason) {
    // "Camera off" already says there is no picture; the notice is for a live camera.
    let text = {title: '', detail: ''};
    if (paused && !tile.classList.contains('camera-off')) {
      const title = Object.hasOwn(PAUSED_VIDEO_TITLE, reason) ? PAUSED_VIDEO_TITLE[reason] : 'tile.paused';
      text = {title: t(title), detail: t('tile.paused.detail')};
    }
    tile.classList.toggle('video-paused', Boolean(text.title));
    // The region stays in the tile so that a change is announced; each write would be
    // announced again, so only changes are written.
    setText(tile.querySelector('.tile-paused-title'), text.title);
    setText(tile.querySelector('.tile-paused-detail'), text.detail);
  }

  _updateSpotlight(tile, person, several) {
    const on = this.spotlit === person.id;
    tile.classList.toggle('spotlight', on);
    const pin = tile.querySelector('.tile-pin');
    if (!pin) return;
    pin.hidden = !several;
    pin.setAttribute('aria-pressed', String(on));
    const label = on ? t('tile.spotlight_off') : t('tile.spotlight', {name: person.name});
    pin.setAttribute('aria-label', label);
    pin.title = label;
  }

  /** How well this person reaches us: a word on the tile while it is not good. */
  _updateQuality(tile, quality) {
    tile.dataset.quality = quality ?? '';
    const text = {weak: 'tile.quality.weak', lost: 'tile.quality.lost'}[quality];
    setText(tile.querySelector('.tile-quality'), text ? t(text) : '');
  }

  _updateVideo(tile, person, item) {
    let video = tile.querySelector('video.remote-video');
    if (!item) {
      if (video) {
        video.srcObject = null;
        video.remove();
      }
      return;
    }
    if (!video) {
      video = document.createElement('video');
      video.className = 'remote-video';
      video.setAttribute('autoplay', '');
      video.setAttribute('playsinline', '');
      video.muted = true;  // sound comes from the tile's <audio>
      video.dataset.kind = 'video';
      tile.prepend(video);
    }
    video.dataset.participantId = person.id;
    video.dataset.name = person.name;
    video.dataset.role = person.role;
    video.setAttribute('aria-label', t('tile.video_of', {name: person.name}));
    this._play(video, item.track);
  }

  _updateAudio(tile, person, items) {
    const wanted = new Set();
    for (const item of items) {
      let audio = tile.querySelector(`audio[data-mid="${CSS.escape(item.mid)}"]`);
      if (!audio) {
        audio = document.createElement('audio');
        audio.className = 'remote-audio';
        audio.setAttribute('autoplay', '');
        audio.dataset.mid = item.mid;
        tile.append(audio);
      }
      audio.dataset.participantId = person.id;
      this._play(audio, item.track);
      wanted.add(audio);
    }
    for (const audio of tile.querySelectorAll('audio.remote-audio')) {
      if (!wanted.has(audio)) {
        audio.srcObject = null;
        audio.remove();
      }
    }
  }

  _play(element, track) {
    // Track objects change after a reconnect; the same track needs nothing.
    if (element.srcObject?.getTracks()[0] === track) return;
    element.srcObject = new MediaStream([track]);
    this._start(element);
  }

  _start(element) {
    element.play().catch((err) => {
      // AbortError only means a newer srcObject replaced this one.
      if (err.name === 'NotAllowedError') this.dispatchEvent(new Event('playbackblocked'));
    });
  }
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function sameWords(a, b) {
  return (a ?? '').trim().toLocaleLowerCase() === (b ?? '').trim().toLocaleLowerCase();
}

function initials(name) {
  return (name ?? '')
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((word) => Array.from(word)[0].toUpperCase())  // whole characters, not UTF-16 halves
    .join('');
}
