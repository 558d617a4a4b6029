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

import {POSES, poseInstruction, poseLabel} from './analysis-state.js';
import {FaceMeshOverlay} from './face-mesh.js';

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
    const lead = {record: 'Recording', capture: 'Clinical photos'}[about];
    const detail = capitalize(message || code);
    show(lead ? `${lead}: ${detail}` : detail, {code, about: about ?? ''});
  });
  client.addEventListener('statechange', () => {
    if (client.state === 'closed') hide();
  });
  return {show, hide};
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
    by.textContent = on ? `Recording${recording.by ? ` by ${recording.by}` : ''}` : '';
    badge.title = on && recording.recording_id ? `Recording ${recording.recording_id}` : '';

    button.hidden = !client.can('record');
    button.dataset.recording = on ? 'on' : 'off';
    button.classList.toggle('is-recording', on);
    label.textContent = on ? 'Stop recording' : 'Record';
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
        const what = reason.replace(/^error:?\s*/, '') || 'an error';
        alert.show(`The recording stopped: ${what}. The call goes on.`, {code: 'recording-error', about: 'record',
                                                                           persist: true});
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
  render();
}

// ---- analysis panel -------------------------------------------------------------------

function signed(value, digits = 1) {
  const text = Math.abs(value).toFixed(digits);
  if (Number(text) === 0) return (0).toFixed(digits);
  return `${value > 0 ? '+' : '−'}${text}`;
}

function angle(value, positive, negative) {
  if (typeof value !== 'number') return '–';
  const words = Math.abs(value) < MIN_DIRECTION_DEG ? 'straight' : value > 0 ? positive : negative;
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
    return share < 1 ? null : `${share.toFixed(0)}% ${value > 0 ? positive : negative}`;
  };
  const parts = [part(framing.offset_x, 'right', 'left'), part(framing.offset_y, 'down', 'up')].filter(Boolean);
  return parts.length ? `${parts.join(', ')} (in the image)` : 'centred';
}

function castText(cast) {
  if (!cast || typeof cast.chroma !== 'number') return '–';
  let tint = '';
  if (cast.chroma >= CAST_NOTICEABLE) {
    const hues = [];
    if (Math.abs(cast.b) >= 4) hues.push(cast.b > 0 ? 'yellow' : 'blue');
    if (Math.abs(cast.a) >= 4) hues.push(cast.a > 0 ? 'red' : 'green');
    tint = hues.length ? ` · tinted ${hues.join('-')}` : ' · tinted';
  }
  return `chroma ${cast.chroma.toFixed(1)} (a ${signed(cast.a)}, b ${signed(cast.b)})${tint}`;
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
    told.textContent = guidance ? `“${guidance.text}”` : 'Not known yet';
    told.dataset.prompt = guidance?.prompt ?? '';

    let state = 'unknown';
    let line;
    if (!patient) line = client.joined ? 'Waiting for the patient to join…' : 'Not connected.';
    else if (entry?.failed) line = 'No analysis: it stopped on this video (see below).';
    else if (!metrics) line = `Waiting for ${patient.name}'s video…`;
    else if (stale) line = 'No recent analysis: the patient\'s video may have stopped.';
    else if (!face) {
      state = 'none';
      line = 'No face found in the picture.';
    } else {
      state = 'found';
      line = 'Face found.';
    }
    panel.dataset.face = state;
    panel.dataset.updates = String(entry?.updates ?? 0);
    panel.toggleAttribute('data-stale', stale);
    faceLine.textContent = line;

    if (face) {
      setMetrics({
        // Left and right are the patient's own (docs/PROTOCOL.md signs).
        yaw: angle(face.pose?.yaw, 'to their left', 'to their right'),
        pitch: angle(face.pose?.pitch, 'chin up', 'chin down'),
        roll: angle(face.pose?.roll, 'tilted to their left', 'tilted to their right'),
        size: face.framing ? `${percent(face.framing.height)} of frame height` : '–',
        offset: face.framing ? offsetText(face.framing) : '–',
        sharpness: typeof face.sharpness === 'number' ? face.sharpness.toFixed(1) : '–',
        exposure: face.exposure
          ? `median ${Math.round(face.exposure.p50)} (${Math.round(face.exposure.p05)}–${Math.round(face.exposure.p95)})`
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
      const name = capitalize((entry.failed.processor ?? 'analysis').replace(/-/g, ' '));
      failed.textContent = `${name} stopped on the patient's video`
        + `${entry.failed.error ? `: ${entry.failed.error}` : ''}. The call goes on; guidance and photos are off.`;
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
    start.title = patient ? '' : 'The patient is not here.';
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
        const state = {done: 'taken', current: 'now', pending: 'to do', skipped: 'not taken'}[step];
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
        ? `${POSES.map((p) => poseLabel(p)).join(', ')}: each photo is taken when the patient holds the pose.`
        : 'No photos are being taken.';
    } else if (running) {
      text = `Photo ${taken + 1} of ${total}: ${poseLabel(capture.pose)}. `
        + `The patient is asked: “${poseInstruction(capture.pose)}”.`;
    } else if (capture.state === 'done') {
      text = `All ${total} photos taken.`;
    } else if (capture.state === 'stopped') {
      text = `Stopped after ${taken} of ${total} photos.`;
    } else if (capture.state === 'interrupted') {
      text = `Interrupted after ${taken} of ${total} photos: the patient's video went away.`;
    } else {
      text = `Stopped after ${taken} of ${total} photos: the face analysis failed.`;
    }
    if (pending?.action === 'start') text = 'Starting…';
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
    image.alt = `${label} photo`;
    image.decoding = 'async';
    const caption = document.createElement('figcaption');
    caption.textContent = label;
    if (still.width && still.height) {
      caption.title = `${still.width}×${still.height} px, kept in the consultation record`;
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
  render();
}
