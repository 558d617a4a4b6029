/**
 * Asks whoever did not start it whether to go on when the consultation is recorded: the
 * page says who records, and Continue or Leave. The answer goes to the server (`consent`),
 * which writes it into the audit log under the participant's identity and tells the room.
 * Those who may record (the doctor) are not asked: starting it is their answer. Nor is
 * anyone the server knows agreed (`consent: true` in their `recording` message: in this tab
 * or another, or for the earlier part of a recording carried on after a move).
 *
 * Test hooks: #consent[data-recording-id] (hidden once answered); `consent` events.
 */

import {onLanguageChange, t} from './i18n.js';

// Answered in this tab (a reload does not ask again about the same recording).
const ANSWERED_KEY = 'consult-sfu:consent';

function answeredIds() {
  try {
    return new Set(JSON.parse(sessionStorage.getItem(ANSWERED_KEY) ?? '[]'));
  } catch {
    return new Set();  // storage disabled or spoilt: ask again
  }
}

function remember(ids) {
  try {
    sessionStorage.setItem(ANSWERED_KEY, JSON.stringify([...ids].slice(-20)));
  } catch {
    // storage disabled: a reload asks again, which is safe
  }
}

/**
 * Binds the consent box: `box` (hidden unless asking), its `text`, `held` (shown in rooms
 * that record no one before they agree), and the two buttons.
 */
export function bindRecordingConsent(client, {box, text, held, proceed, leave}) {
  const answered = answeredIds();
  const current = () => {
    const recording = client.recording;
    return recording.state === 'on' && client.joined && !client.can('record') ? recording.recording_id ?? null : null;
  };
  const update = () => {
    const id = current();
    if (id !== null && client.recording.consent === true && !answered.has(id)) {
      answered.add(id);  // the server has this participant's agreement already
      remember(answered);
    }
    const ask = id !== null && !answered.has(id);
    box.hidden = !ask;
    box.dataset.recordingId = ask ? id : '';
    if (held) held.hidden = !(ask && client.recording.consent_required);
    if (ask) {
      const by = client.recording.by;
      text.textContent = by ? t('consent.text_by', {name: by}) : t('consent.text');
    }
  };
  const answer = (given) => {
    const id = current();
    if (id === null || !client.answerRecording(id, given)) return false;
    answered.add(id);
    remember(answered);
    update();
    return true;
  };
  proceed.addEventListener('click', () => answer(true));
  leave.addEventListener('click', () => {
    answer(false);
    client.leave();
  });
  for (const type of ['recording', 'statechange', 'participants']) client.addEventListener(type, update);
  onLanguageChange(update);
  update();
}
