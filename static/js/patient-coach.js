/**
 * The patient page's consultation prompts: the recording notice (consent: whenever the
 * room is recorded the patient is told, by whom), and the coach over the stage while the
 * doctor's photo protocol runs: which photo, one instruction at a time (the face
 * analysis' prompt for the wanted pose, "Please face the camera", else the pose itself),
 * and "Photo taken" when one is done. Outside the protocol the coach says nothing: the
 * prompts would nag through the whole conversation over the doctor's picture.
 *
 * Test hooks: #recording[data-recording=on|off]; #guidance[data-prompt] (the analysis'
 * latest prompt, shown or not); #capture-step[data-capture-state=idle|running|done]
 * [data-pose]; #photo-taken[data-pose].
 */

import {guidanceText, poseInstruction} from './analysis-state.js';
import {onLanguageChange, t} from './i18n.js';

const PHOTO_TAKEN_MS = 3_000;  // how long "Photo taken" shows
const ALL_DONE_MS = 6_000;     // how long the thank-you shows after the last photo

/**
 * Shows the recording strip while the server says the room is recorded. `onStopped`
 * is called when the server says a recording the patient was told about ended (not when
 * our own call ended: the state we knew is only forgotten then), `onStarted` when one
 * is on again.
 */
export function bindRecordingNotice(client, {region, strip, text}, {onStopped = () => {}, onStarted = () => {}} = {}) {
  let wasOn = false;
  const update = () => {
    const recording = client.recording;
    const on = recording.state === 'on' && client.state !== 'closed';
    region.dataset.recording = on ? 'on' : 'off';
    document.body.dataset.recording = on ? 'on' : 'off';
    strip.hidden = !on;
    if (on) {
      setText(text, recording.by ? t('recording.on_by', {name: recording.by}) : t('recording.on'));
    }
    if (wasOn && !on && client.state !== 'closed' && recording.reason) onStopped(recording);
    if (!wasOn && on) onStarted(recording);
    wasOn = on;
  };
  client.addEventListener('recording', update);
  client.addEventListener('statechange', update);
  onLanguageChange(update);
  update();
}

// Text in a live region is only replaced when it changes: some screen readers announce a
// new text node even when it says the same.
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

/** Binds the coach (see the module comment) to the analysis of the patient's own video. */
export function bindCoach(client, analysis, els) {
  let timer = null;

  const render = () => {
    clearTimeout(timer);
    timer = null;
    const live = client.state === 'connected';
    const entry = live ? analysis.get(client.self?.id) : null;
    const now = performance.now();
    const capture = entry?.capture ?? null;
    const cameraOff = client.isOff('video');
    let nextCheck = Infinity;

    // The photo protocol.
    const lastTaken = capture?.lastTaken ?? null;
    const takenShown = Boolean(lastTaken) && now - lastTaken.at < PHOTO_TAKEN_MS;
    const allDone = capture?.state === 'done' && Boolean(lastTaken) && now - lastTaken.at < ALL_DONE_MS;
    if (takenShown) nextCheck = Math.min(nextCheck, lastTaken.at + PHOTO_TAKEN_MS);
    if (allDone) nextCheck = Math.min(nextCheck, lastTaken.at + ALL_DONE_MS);
    const running = capture?.state === 'running';
    els.step.hidden = !(running || allDone);
    els.step.dataset.captureState = running ? 'running' : allDone ? 'done' : 'idle';
    els.step.dataset.pose = running ? capture.pose ?? '' : '';
    if (running) {
      const total = capture.poses.length;
      els.count.hidden = total < 2;
      setText(els.count, t('capture.count', {n: Math.min(capture.taken + 1, total), total}));
      setText(els.pose, poseInstruction(capture.pose));
      els.pose.hidden = false;
    } else if (allDone) {
      els.pose.hidden = false;
      els.count.hidden = true;
      setText(els.pose, t('capture.all_done'));
    }
    els.taken.hidden = !takenShown;
    els.taken.dataset.pose = takenShown ? lastTaken.pose ?? '' : '';

    // The analysis' prompt, while photos are taken, in place of the pose's own words: it
    // is about the camera picture, so not while the camera is off. A prompt from before
    // the last photo was about the previous pose: the pose's words wait for the next one.
    let guidance = entry?.guidance ?? null;
    els.guidance.dataset.prompt = cameraOff ? 'camera_off' : guidance?.prompt ?? '';
    if (guidance && lastTaken && guidance.at < lastTaken.at) guidance = null;
    let text = null;
    if (running && cameraOff) text = t('capture.camera_off');
    else if (running && guidance) text = guidanceText(guidance);
    els.guidance.hidden = !text;
    setText(els.guidance, text ?? '');
    if (running && text) els.pose.hidden = true;

    els.coach.hidden = els.step.hidden && els.guidance.hidden;
    if (nextCheck !== Infinity) timer = setTimeout(render, Math.max(50, nextCheck - now + 20));
  };

  analysis.addEventListener('change', render);
  client.addEventListener('statechange', render);
  client.addEventListener('participants', render);
  client.addEventListener('localmedia', render);
  onLanguageChange(render);
  render();
}
