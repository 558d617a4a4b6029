/**
 * What the room's frame processors say about each patient's video (docs/PROTOCOL.md,
 * "Analysis"): the prompt the patient is shown, the latest face metrics, the progress of
 * the guided photo protocol and the photos taken. No DOM here: the patient page and the
 * console both draw from it.
 *
 * Fires `change` (CustomEvent, detail {participant, kind}) after every update; `kind` is
 * the message's kind (guidance, face-metrics, capture, still), `processor-failed`, or
 * `left` when the participant went away.
 */

import {hasText, t} from './i18n.js';

// The poses of the photo protocol (signalling/protocol.py CAPTURE_POSES), in the
// server's default order.
export const POSES = Object.freeze(['frontal', 'left45', 'right45']);

// What the patient is asked to do for each pose (`pose.instruction.<pose>`: left and
// right are the patient's own, media/processors/guidance.py TargetPose, as in the
// server's prompts) and the clinician's name for each photo (`pose.label.<pose>`).
export function poseInstruction(pose) {
  return t(POSES.includes(pose) ? `pose.instruction.${pose}` : 'pose.instruction.default');
}

export function poseLabel(pose) {
  if (POSES.includes(pose)) return t(`pose.label.${pose}`);
  return pose ? String(pose) : t('pose.label.default');
}

/** A guidance prompt in the page's language (the server's own text for a prompt this page does not know). */
export function guidanceText(guidance) {
  const key = `prompt.${guidance.prompt}`;
  return hasText(key) ? t(key) : guidance.text;
}

const THUMBNAIL_PREFIX = 'data:image/jpeg;base64,';

/**
 * One patient's analysis:
 *   guidance  {prompt, text, t_ms, at (performance.now() on arrival)} or null
 *   metrics   {face, cast, t_ms} or null (face null: no face in the picture)
 *   metricsAt performance.now() of the latest metrics; updates: how many arrived
 *   capture   null, or {state: running|done|stopped|interrupted|failed, poses (the whole
 *             protocol), taken (how many photos of it), pose (the one wanted now, or
 *             null), lastTaken {pose, at} (at: performance.now()) or null}
 *   stills    [{pose, thumbnail, width, height, t_ms}], oldest first
 *   failed    {processor, error} once a processor stopped on this video, else null
 *   gone      true once the participant left the room
 */
function emptyEntry(participant) {
  return {
    participant, guidance: null, metrics: null, metricsAt: 0, updates: 0,
    capture: null, stills: [], failed: null, gone: false,
  };
}

export class AnalysisState extends EventTarget {
  constructor(client) {
    super();
    this.client = client;
    this.patients = new Map();  // participant id -> entry (see emptyEntry)
    client.addEventListener('analysis', (event) => this._onMessage(event.detail));
    client.addEventListener('participants', () => this._prune());
  }

  /** The entry of participant `id`, or null when nothing was heard about them. */
  get(id) {
    return (id && this.patients.get(id)) || null;
  }

  _entry(id) {
    let entry = this.patients.get(id);
    if (!entry) {
      entry = emptyEntry(id);
      this.patients.set(id, entry);
    }
    return entry;
  }

  _onMessage(msg) {
    const id = msg.participant;
    if (typeof id !== 'string') return;
    const entry = this._entry(id);
    entry.gone = false;
    let kind = msg.kind;
    if (msg.type === 'processor-failed') {
      kind = 'processor-failed';
      entry.failed = {processor: msg.processor, error: msg.error ?? ''};
      // A failed processor says nothing more: a protocol it was running is over.
      if (entry.capture?.state === 'running') entry.capture = {...entry.capture, state: 'failed', pose: null};
    } else if (msg.kind === 'guidance') {
      if (typeof msg.text !== 'string') return;
      entry.guidance = {prompt: msg.prompt ?? null, text: msg.text, t_ms: msg.t_ms ?? null, at: performance.now()};
    } else if (msg.kind === 'face-metrics') {
      entry.metrics = {face: msg.face ?? null, cast: msg.cast ?? null, t_ms: msg.t_ms ?? null};
      entry.metricsAt = performance.now();
      entry.updates += 1;
      entry.failed = null;  // it works (again)
    } else if (msg.kind === 'capture') {
      this._onCapture(entry, msg);
    } else if (msg.kind === 'still') {
      if (typeof msg.thumbnail !== 'string' || !msg.thumbnail.startsWith(THUMBNAIL_PREFIX)) return;
      entry.stills.push({
        pose: msg.pose, thumbnail: msg.thumbnail, width: msg.width ?? null, height: msg.height ?? null,
        t_ms: msg.t_ms ?? null,
      });
    } else {
      return;  // a kind from a newer server
    }
    this._changed(id, kind);
  }

  _onCapture(entry, msg) {
    const remaining = Array.isArray(msg.remaining) ? msg.remaining : [];
    const running = entry.capture?.state === 'running';
    if (msg.state === 'started' || (msg.state === 'next' && !running)) {
      // A new protocol, or one we only hear about halfway (e.g. after reconnecting):
      // what is left is all we know of it.
      entry.capture = {state: 'running', poses: [...remaining], taken: 0, pose: msg.pose ?? remaining[0] ?? null,
                       lastTaken: null};
      return;
    }
    if (!running) return;  // the end of a protocol we did not see running
    const capture = {...entry.capture};
    if (msg.state === 'next') {
      const taken = Math.max(capture.taken + 1, capture.poses.length - remaining.length);
      capture.lastTaken = {pose: capture.poses[taken - 1] ?? capture.pose, at: performance.now()};
      capture.taken = taken;
      capture.pose = msg.pose ?? remaining[0] ?? null;
    } else if (msg.state === 'done') {
      capture.lastTaken = {pose: capture.pose ?? capture.poses[capture.poses.length - 1], at: performance.now()};
      capture.taken = capture.poses.length;
      capture.state = 'done';
      capture.pose = null;
    } else if (msg.state === 'stopped') {
      capture.state = 'stopped';
      capture.pose = null;
    } else {
      return;
    }
    entry.capture = capture;
  }

  // Who left takes their live state along; photos taken stay (they are in the record).
  // A protocol running on their video ended with them, though the server does not say.
  _prune() {
    const {client} = this;
    if (!client.joined) return;  // reconnecting: the room's people are not known yet
    for (const [id, entry] of this.patients) {
      if (entry.gone || id === client.self?.id || client.participants.has(id)) continue;
      entry.gone = true;
      if (entry.capture?.state === 'running') entry.capture = {...entry.capture, state: 'interrupted', pose: null};
      entry.guidance = null;
      entry.metrics = null;
      entry.failed = null;
      this._changed(id, 'left');
    }
  }

  _changed(participant, kind) {
    this.dispatchEvent(new CustomEvent('change', {detail: {participant, kind}}));
  }
}
