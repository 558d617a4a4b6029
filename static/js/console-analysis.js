/**
 * The console's consultation tools: recording (the REC state everyone sees, the button
 * for those with the `record` permission), the analysis panel for the patient's video
 * (what the patient is told, head pose, framing, quality, and the face mesh over their
 * tile), the guided clinical photos (start, stop, progress, thumbnails), and the
 * server's refusals in plain words.
 *
 * Test hooks: #rec-status[data-recording=on|off]; #record[data-recording];
 * #analysis[data-face=unknown|none|found][data-updates][data-stale]; dd[data-metric];
 * canvas.face-mesh-layer[data-points]; #capture[data-capture-state]; #capture-steps li
 * [data-pose][data-step=done|current|pending|skipped]; #stills[data-count] li[data-pose];
 * #console-alert[data-code][data-about].
 */

import {POSES, guidanceText, poseInstruction, poseLabel} from './analysis-state.js';
import {FaceMeshOverlay} from './face-mesh.js';
import {hasText, listText, onLanguageChange, t, tn} from './i18n.js';

const REQUEST_TIMEOUT_MS = 10_000;  // a button waits this long for the server's answer
const STALE_AFTER_MS = 3_000;       // metrics arrive at 5 Hz; older than this is no news
const ALERT_MS = 20_000;
const MIN_DIRECTION_DEG = 2;        // below this a head angle reads as straight
const CAST_NOTICEABLE = 11;         // below this the guidance's colour-cast prompt lets go (guidance.py)

const $ = (id) => document.getElementById(id);

function capitalize(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** The patient whose video the panels are about: the first one in the room. */
function currentPatient(client) {
  for (const person of client.participants.values()) {
    if (person.role === 'patient') return person;
  }
  return null;
}

// ---- alerts -------------------------------------------------------------------------

// Errors shown even when they answer no request of ours that we know of. An unclaimed
// bad_state is about signalling (an answer's revision, say), nothing to show a doctor.
const UNCLAIMED_SHOWN = new Set(['recording_failed', 'forbidden', 'internal']);

/**
 * The console's alert box: the server's refusals of our requests, a recording that
 * stopped on a failure. Returns {show(text, {code, about, persist}), hide(about?)}:
 * hide(about) only hides an alert about that ('record', 'capture').
 */
export function bindConsoleAlert(client) {
  const box = $('console-alert');
  const text = $('console-alert-text');
  let timer = null;
  const hide = (about = null) => {
    if (about !== null && box.dataset.about !== about) return;
    clearTimeout(timer);
    box.hidden = true;
  };
  const show = (message, {code = '', about = '', persist = false} = {}) => {
    clearTimeout(timer);
    text.textContent = message;
    box.dataset.code = code;
    box.dataset.about = about;
    box.hidden = false;
    if (!persist) timer = setTimeout(hide, ALERT_MS);
  };
  $('console-alert-close').addEventListener('click', () => hide());

  client.addEventListener('servererror', (event) => {
    const {code, message, about} = event.detail;
    if (about === 'annotate') return;  // the drawing toolbar says it, next to the drawing
    if (about === null && !UNCLAIMED_SHOWN.has(code)) return;
    const detail = serverErrorText(code, message, about);
    const lead = {record: 'console.alert.record', capture: 'console.alert.capture'}[about];
    show(lead ? t(lead, {detail}) : detail, {code, about: about ?? ''});
  });
  client.addEventListener('statechange', () => {
    if (client.state === 'closed') hide();
  });
  return {show, hide};
}

/**
 * A refusal in the page's language, by its code and what it was about; the server's own
 * words (English, often technical) for a refusal the catalogue has no text for.
 */
function serverErrorText(code, message, about) {
  for (const key of [`server_error.${about}.${code}`, `server_error.${code}`]) {
    if (hasText(key)) return t(key);
  }
  return capitalize(message || code);
}

// ---- recording ----------------------------------------------------------------------

/** The REC badge in the top bar, and the record button in the controls. */
export function bindRecording(client, alert) {
  const region = $('rec-status');
  const badge = $('rec-badge');
  const by = $('rec-by');
  const button = $('record');
  const label = button.querySelector('.control-label');
  let pending = null;  // timer while a request of ours is unanswered
  let wasOn = false;

  const settle = () => {
    clearTimeout(pending);
    pending = null;
  };
  const render = () => {
    const recording = client.recording;
    const on = recording.state === 'on' && client.state !== 'closed';
    region.dataset.recording = on ? 'on' : 'off';
    document.body.dataset.recording = on ? 'on' : 'off';
    badge.hidden = !on;
    by.textContent = on ? (recording.by ? t('recording.badge_by', {name: recording.by}) : t('recording.badge')) : '';
    badge.title = on && recording.recording_id ? t('recording.badge_title', {id: recording.recording_id}) : '';

    button.hidden = !client.can('record');
    button.dataset.recording = on ? 'on' : 'off';
    button.classList.toggle('is-recording', on);
    label.textContent = t(on ? 'control.stop_recording' : 'control.record');
    button.disabled = !client.joined || pending !== null;
  };

  button.addEventListener('click', () => {
    const on = client.recording.state === 'on';
    if (!client.setRecording(!on)) return;
    pending = setTimeout(() => {
      pending = null;
      render();
    }, REQUEST_TIMEOUT_MS);
    render();
  });
  client.addEventListener('recording', () => {
    const {state, reason} = client.recording;
    settle();
    if (state === 'on') {
      if (!wasOn) alert.hide('record');  // an old recording failure is out of date now
      wasOn = true;
    } else {
      if (wasOn && typeof reason === 'string' && reason.startsWith('error')) {
        const what = reason.replace(/^error:?\s*/, '');
        const text = what ? t('recording.stopped_error', {reason: what}) : t('recording.stopped_error_unknown');
        alert.show(text, {code: 'recording-error', about: 'record', persist: true});
      }
      wasOn = false;
    }
    render();
  });
  client.addEventListener('servererror', (event) => {
    if (event.detail.about === 'record') {
      settle();
      render();
    }
  });
  for (const type of ['statechange', 'participants']) client.addEventListener(type, render);
  onLanguageChange(render);
  render();
}

// ---- analysis panel -------------------------------------------------------------------

function signed(value, digits = 1) {
  const text = Math.abs(value).toFixed(digits);
  if (Number(text) === 0) return (0).toFixed(digits);
  return `${value > 0 ? '+' : '−'}${text}`;
}

/** A head angle with its direction in words (catalogue keys for either sign). */
function angle(value, positive, negative) {
  if (typeof value !== 'number') return '–';
  const words = t(Math.abs(value) < MIN_DIRECTION_DEG ? 'analysis.straight' : value > 0 ? positive : negative);
  return `${signed(value)}° · ${words}`;
}

function percent(fraction, digits = 0) {
  return `${(fraction * 100).toFixed(digits)}%`;
}

// Offsets are in half-frame units (> 0 right / down in the image); said as a share of
// the frame's width and height.
function offsetText(framing) {
  const part = (value, positive, negative) => {
    const share = Math.abs(value) * 50;
    return share < 1 ? null : t(value > 0 ? positive : negative, {share: share.toFixed(0)});
  };
  const parts = [
    part(framing.offset_x, 'analysis.offset.right', 'analysis.offset.left'),
    part(framing.offset_y, 'analysis.offset.down', 'analysis.offset.up'),
  ].filter(Boolean);
  return parts.length ? t('analysis.offset.in_image', {parts: listText(parts)}) : t('analysis.offset.centred');
}

function castText(cast) {
  if (!cast || typeof cast.chroma !== 'number') return '–';
  let tint = '';
  if (cast.chroma >= CAST_NOTICEABLE) {
    const hues = [];
    if (Math.abs(cast.b) >= 4) hues.push(t(cast.b > 0 ? 'analysis.hue.yellow' : 'analysis.hue.blue'));
    if (Math.abs(cast.a) >= 4) hues.push(t(cast.a > 0 ? 'analysis.hue.red' : 'analysis.hue.green'));
    tint = ` · ${hues.length ? t('analysis.cast.tinted_hues', {hues: hues.join('-')}) : t('analysis.cast.tinted')}`;
  }
  return t('analysis.cast', {chroma: cast.chroma.toFixed(1), a: signed(cast.a), b: signed(cast.b)}) + tint;
}

/**
 * The analysis panel, and the face mesh over the patient's tile of `view` while the
 * toggle is on. Returns `sync`, to call after each view.render(client) (tiles and
 * videos come and go).
 */
export function bindAnalysisPanel(client, analysis, view) {
  const panel = $('analysis');
  const told = $('analysis-guidance');
  const faceLine = $('analysis-face');
  const failed = $('processor-failed');
  const toggle = $('mesh-toggle');
  const metric = Object.fromEntries([...panel.querySelectorAll('dd[data-metric]')].map((dd) => [dd.dataset.metric, dd]));
  let mesh = null;  // {tile, overlay}

  const setMetrics = (values) => {
    for (const [name, dd] of Object.entries(metric)) dd.textContent = values[name] ?? '–';
  };

  const render = () => {
    const patient = currentPatient(client);
    const entry = patient ? analysis.get(patient.id) : null;
    const metrics = entry?.metrics ?? null;
    const stale = Boolean(metrics) && performance.now() - entry.metricsAt > STALE_AFTER_MS;
    const face = metrics && !stale ? metrics.face : null;

    const guidance = entry?.guidance;
    // Prompts are sent when they change: one sent before we joined is not known here.
    told.textContent = guidance ? `“${guidanceText(guidance)}”` : t('analysis.told_unknown');
    told.dataset.prompt = guidance?.prompt ?? '';

    let state = 'unknown';
    let line;
    if (!patient) line = t(client.joined ? 'analysis.waiting_patient' : 'analysis.not_connected');
    else if (entry?.failed) line = t('analysis.stopped_line');
    else if (!metrics) line = t('analysis.waiting_video', {name: patient.name});
    else if (stale) line = t('analysis.stale');
    else if (!face) {
      state = 'none';
      line = t('analysis.no_face');
    } else {
      state = 'found';
      line = t('analysis.face_found');
    }
    panel.dataset.face = state;
    panel.dataset.updates = String(entry?.updates ?? 0);
    panel.toggleAttribute('data-stale', stale);
    faceLine.textContent = line;

    if (face) {
      setMetrics({
        // Left and right are the patient's own (docs/PROTOCOL.md signs).
        yaw: angle(face.pose?.yaw, 'analysis.yaw.positive', 'analysis.yaw.negative'),
        pitch: angle(face.pose?.pitch, 'analysis.pitch.positive', 'analysis.pitch.negative'),
        roll: angle(face.pose?.roll, 'analysis.roll.positive', 'analysis.roll.negative'),
        size: face.framing ? t('analysis.size', {share: percent(face.framing.height)}) : '–',
        offset: face.framing ? offsetText(face.framing) : '–',
        sharpness: typeof face.sharpness === 'number' ? face.sharpness.toFixed(1) : '–',
        exposure: face.exposure
          ? t('analysis.exposure', {p50: Math.round(face.exposure.p50), p05: Math.round(face.exposure.p05),
                                    p95: Math.round(face.exposure.p95)})
          : '–',
        clipped: face.exposure ? percent(face.exposure.clipped, 1) : '–',
        cast: castText(metrics.cast),
      });
    } else {
      // The colour cast is of the whole frame: known without a face.
      setMetrics({cast: metrics && !stale ? castText(metrics.cast) : '–'});
    }

    failed.hidden = !entry?.failed;
    if (entry?.failed) {
      const key = `processor.${entry.failed.processor}`;
      const processor = hasText(key) ? t(key) : capitalize(String(entry.failed.processor ?? '').replace(/-/g, ' '));
      failed.textContent = entry.failed.error
        ? t('analysis.stopped_because', {processor, error: entry.failed.error})
        : t('analysis.stopped', {processor});
    }
    mesh?.overlay.setLandmarks(toggle.checked && face ? face.landmarks : null);
  };

  const sync = () => {
    const patient = currentPatient(client);
    const tile = toggle.checked && patient ? view.tiles.get(patient.id) ?? null : null;
    if (mesh && mesh.tile !== tile) {
      mesh.overlay.destroy();
      mesh = null;
    }
    if (tile && !mesh) {
      // Under the annotation marks, which must stay readable on top.
      const before = tile.querySelector('canvas.annotation-layer') ?? tile.querySelector('.tile-placeholder');
      mesh = {tile, overlay: new FaceMeshOverlay(tile, {before})};
    }
    mesh?.overlay.setVideo(tile?.querySelector('video.remote-video') ?? null);
    render();
  };

  toggle.addEventListener('change', sync);
  analysis.addEventListener('change', render);
  onLanguageChange(render);
  for (const type of ['statechange', 'participants']) client.addEventListener(type, render);
  // Staleness shows without any message arriving.
  setInterval(render, 1_000);
  render();
  return sync;
}

// ---- clinical photos -------------------------------------------------------------------

/** Start / stop, the protocol's progress, and the thumbnails of the photos taken. */
export function bindCapturePanel(client, analysis) {
  const section = $('capture');
  const actions = $('capture-actions');
  const start = $('capture-start');
  const stop = $('capture-stop');
  const steps = $('capture-steps');
  const status = $('capture-status');
  const strip = $('stills');
  let shownOf = null;  // participant whose protocol is shown (the latest heard of)
  let pending = null;  // {action, timer} while a request of ours is unanswered

  const settle = () => {
    clearTimeout(pending?.timer);
    pending = null;
  };
  const request = (action) => {
    const sent = action === 'start' ? client.startCapture() : client.stopCapture();
    if (!sent) return;
    settle();
    pending = {action, timer: setTimeout(() => { pending = null; render(); }, REQUEST_TIMEOUT_MS)};
    render();
  };

  const render = () => {
    const capture = analysis.get(shownOf)?.capture ?? null;
    const running = capture?.state === 'running';
    const patient = currentPatient(client);
    const allowed = client.can('record');
    actions.hidden = !allowed;
    start.hidden = running;
    stop.hidden = !running;
    start.disabled = !client.joined || !patient || pending !== null;
    stop.disabled = !client.joined || pending?.action === 'stop';
    start.title = patient ? '' : t('capture.patient_absent');
    section.dataset.captureState = capture?.state ?? 'idle';

    steps.hidden = !capture;
    if (capture) {
      const items = capture.poses.map((pose, index) => {
        const item = document.createElement('li');
        item.dataset.pose = pose;
        let step = 'pending';
        if (index < capture.taken) step = 'done';
        else if (running && index === capture.taken) step = 'current';
        else if (!running) step = 'skipped';
        item.dataset.step = step;
        if (step === 'current') item.setAttribute('aria-current', 'step');
        const state = t({done: 'capture.step.done', current: 'capture.step.current', pending: 'capture.step.pending',
                         skipped: 'capture.step.skipped'}[step]);
        item.innerHTML = '<span class="step-mark" aria-hidden="true"></span><span class="step-name"></span>'
          + '<span class="step-state"></span>';
        item.querySelector('.step-name').textContent = poseLabel(pose);
        item.querySelector('.step-state').textContent = state;
        return item;
      });
      steps.replaceChildren(...items);
    }

    const total = capture?.poses.length ?? 0;
    const taken = capture?.taken ?? 0;
    let text;
    if (!capture) {
      text = allowed
        ? t('capture.protocol', {poses: listText(POSES.map((p) => poseLabel(p)))})
        : t('capture.none');
    } else if (running) {
      text = t('capture.running', {n: taken + 1, total, pose: poseLabel(capture.pose),
                                   instruction: poseInstruction(capture.pose)});
    } else {
      const ended = {done: 'capture.done', stopped: 'capture.stopped', interrupted: 'capture.interrupted'};
      text = tn(ended[capture.state] ?? 'capture.failed', total, {taken, total});
    }
    if (pending?.action === 'start') text = t('capture.starting');
    if (status.textContent !== text) status.textContent = text;
  };

  const addStill = (still) => {
    const label = poseLabel(still.pose);
    const item = document.createElement('li');
    item.className = 'still';
    item.dataset.pose = still.pose ?? '';
    const figure = document.createElement('figure');
    const image = document.createElement('img');
    image.src = still.thumbnail;
    image.alt = t('still.alt', {label});
    image.decoding = 'async';
    const caption = document.createElement('figcaption');
    caption.textContent = label;
    if (still.width && still.height) {
      caption.title = t('still.size', {width: still.width, height: still.height});
      image.width = 160;
      image.height = Math.round((160 * still.height) / still.width);
    }
    figure.append(image, caption);
    item.append(figure);
    strip.append(item);
    strip.dataset.count = String(strip.children.length);
    strip.hidden = false;
    strip.scrollLeft = strip.scrollWidth;  // the newest in view
  };

  start.addEventListener('click', () => request('start'));
  stop.addEventListener('click', () => request('stop'));
  analysis.addEventListener('change', (event) => {
    const {participant, kind} = event.detail;
    const entry = analysis.get(participant);
    if (kind === 'capture') {
      shownOf = participant;
      const state = entry?.capture?.state;
      if ((state === 'running' && pending?.action === 'start') || (state !== 'running' && pending?.action === 'stop')) {
        settle();
      }
    } else if ((kind === 'left' || kind === 'processor-failed') && participant === shownOf && pending) {
      settle();
    } else if (kind === 'still' && entry?.stills.length) {
      addStill(entry.stills[entry.stills.length - 1]);
    }
    render();
  });
  client.addEventListener('servererror', (event) => {
    if (event.detail.about === 'capture') {
      settle();
      render();
    }
  });
  for (const type of ['statechange', 'participants']) client.addEventListener(type, render);
  onLanguageChange(render);
  render();
}
