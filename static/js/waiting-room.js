/**
 * The patient's waiting room, while nobody else is in the call: the clinic's name and the
 * doctor the patient waits for (the room's settings), whether the clinic has been told the
 * patient is here (only once the server says its systems took that: `clinic-notified`), how
 * to reach the clinic, a camera check (the own preview, large) and a microphone check (a
 * level meter from the local audio: "We can hear you" once it moves). Shown on
 * body[data-waiting=on]; the meter runs only then.
 */

import {showContact} from './clinic-contact.js';
import {onLanguageChange, t} from './i18n.js';

const METER_MS = 100;
const HEARD_PEAK = 0.02;    // of full scale: speech peaks well above, a quiet room's hiss below
const HEARD_HOLD_MS = 3_000;

export function bindWaitingRoom(client, {section, clinic, title, told, contact, level, status}) {
  let meter = null;  // {context, analyser, timer, source}
  let heardAt = -Infinity;

  const stopMeter = () => {
    if (!meter) return;
    clearInterval(meter.timer);
    meter.source.disconnect();
    meter.context.close().catch(() => {});
    meter = null;
  };
  const startMeter = (track) => {
    const context = new AudioContext();
    const source = context.createMediaStreamSource(new MediaStream([track]));
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    context.resume().catch(() => {});  // capturing pages may run audio without a tap
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      const peak = samples.reduce((most, x) => Math.max(most, Math.abs(x)), 0);
      level.value = Math.min(1, peak);
      if (peak >= HEARD_PEAK) heardAt = performance.now();
      showStatus();
    }, METER_MS);
    meter = {context, analyser, timer, source, track};
  };
  const showStatus = () => {
    const track = client.localTrack('audio');
    let key = 'waiting.mic.silent';
    if (!track || client.isOff('audio')) key = 'waiting.mic.off';
    else if (performance.now() - heardAt < HEARD_HOLD_MS) key = 'waiting.mic.heard';
    status.dataset.state = key.split('.').pop();
    if (status.textContent !== t(key)) status.textContent = t(key);
  };
  const update = () => {
    const waiting = client.state === 'connected' && client.participants.size === 0;
    section.hidden = !waiting;
    document.body.dataset.waiting = waiting ? 'on' : 'off';
    const name = client.room?.clinic;
    clinic.hidden = !name;
    clinic.textContent = name ?? '';
    // Who will see them, when the room names the doctor; else today's general words.
    const doctor = client.room?.doctor_name;
    title.textContent = doctor ? t('waiting.title.doctor', {name: doctor}) : t('stage.waiting_for_doctor');
    // Claimed only when true: the clinic's webhook receiver took the news (no webhook: never).
    // A live region that stays in the page, so that the news is announced when it comes.
    const toldText = client.clinicNotified ? t('waiting.clinic_told') : '';
    if (told.textContent !== toldText) told.textContent = toldText;
    showContact(contact, client.contact);
    const track = waiting && !client.isOff('audio') ? client.localTrack('audio') : null;
    if (meter && meter.track !== track) stopMeter();
    if (track && !meter) startMeter(track);
    if (!track) level.value = 0;
    showStatus();
  };
  for (const type of ['statechange', 'participants', 'localmedia', 'waiting']) client.addEventListener(type, update);
  onLanguageChange(update);
  update();
}
