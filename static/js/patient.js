// The patient's page: mobile first, one big picture of the doctor, big buttons.
import {AnalysisState} from './analysis-state.js';
import {bindMarkLegend, bindSelfViewAnnotations} from './annotation-tools.js';
import {showContactOrServers} from './clinic-contact.js';
import {ConsultClient} from './client.js';
import {ConnectionQuality} from './connection-quality.js';
import {bindLanguageSwitch, initLanguage, onLanguageChange, t} from './i18n.js';
import {renderIcons} from './icons.js';
import {bindCoach, bindRecordingNotice} from './patient-coach.js';
import {bindRecordingConsent} from './recording-consent.js';
import {
  RemoteMediaView, bindLeaveButton, bindLocalPreview, bindMediaNotice, bindMuteButton, bindSoundButton,
  showConnectionState, showEnded, showStageMessage, takeTokenFromHash,
} from './call-ui.js';
import {ViewSizes} from './view-sizes.js';
import {bindViewerMark} from './viewer-mark.js';
import {bindWaitingRoom} from './waiting-room.js';

const $ = (id) => document.getElementById(id);
const TOAST_MS = 6_000;
let toastTimer = null;

renderIcons();
const token = takeTokenFromHash();
await initLanguage({token});
bindLanguageSwitch($('language'));
if (token) start(token);
else showEndedWithContact('no_token', null);

/** The end or error screen, with how to reach the clinic under it (the server's line if no room said one). */
function showEndedWithContact(reason, contact) {
  showEnded(reason);
  showContactOrServers($('ended-contact'), contact);
}

function start(joinToken) {
  const client = new ConsultClient(joinToken);
  window.consultClient = client;

  const quality = new ConnectionQuality(client);
  const view = new RemoteMediaView($('remote'), {roleOrder: ['doctor', 'expert', 'trainer', 'patient'], quality});
  // The server sends each video no larger than the phone draws it.
  new ViewSizes(client, $('remote'));
  const renderRemote = () => {
    view.render(client);
    showStageMessage($('stage-message'), client, 'stage.waiting_for_doctor');
  };
  client.addEventListener('participants', renderRemote);
  client.addEventListener('tracks', renderRemote);
  client.addEventListener('videostate', renderRemote);  // a video paused or resumed to us
  const showState = () => {
    if (client.state === 'closed') showEndedWithContact(client.endReason, client.contact);
    else showConnectionState($('banner'), client.state, quality);
  };
  client.addEventListener('statechange', () => {
    renderRemote();
    showState();
  });
  onLanguageChange(renderRemote);
  quality.addEventListener('change', () => {
    renderRemote();
    showState();
  });

  bindWaitingRoom(client, {
    section: $('waiting'), clinic: $('waiting-clinic'), title: $('waiting-title'), told: $('waiting-told'),
    contact: $('waiting-contact'), level: $('mic-level'), status: $('mic-status'),
  });
  bindSoundButton($('sound'), view, client);
  bindViewerMark(client, $('remote'), {corner: 'left'});  // the room's live watermark, if any
  bindLocalPreview(client, $('local-video'), $('self-view'));
  bindSelfViewSize($('self-view'));
  // The doctor's marks, over the patient's own preview: it is the same picture.
  bindSelfViewAnnotations(client, $('self-view'), $('local-video'));
  bindMarkLegend(client, $('self-view'));
  bindMuteButton($('mic'), client, 'audio', {muteLabel: 'control.mute', unmuteLabel: 'control.unmute'});
  bindMuteButton($('cam'), client, 'video', {muteLabel: 'control.stop_video', unmuteLabel: 'control.start_video'});
  bindFlipButton(client);
  // Consent first: whether the consultation is recorded, and by whom.
  bindRecordingNotice(client, {region: $('recording'), strip: $('recording-strip'), text: $('recording-text')}, {
    onStopped: () => showToast(t('recording.stopped')),
    onStarted: () => hideToast(t('recording.stopped')),  // "stopped" must not outlive a new start
  });
  bindRecordingConsent(client, {
    box: $('consent'), text: $('consent-text'), held: $('consent-held'), proceed: $('consent-continue'),
    leave: $('consent-leave'),
  });
  // The face analysis' prompts and the doctor's photo protocol, over the stage.
  bindCoach(client, new AnalysisState(client), {
    coach: $('coach'), step: $('capture-step'), count: $('capture-count'), pose: $('capture-pose'),
    taken: $('photo-taken'), guidance: $('guidance'),
  });
  const startMedia = bindMediaNotice(client, {
    box: $('media-notice'), text: $('media-notice-text'), retry: $('media-retry'), audience: 'media.audience.doctor',
  });

  bindLeaveButton($('leave'), client);
  $('rejoin').addEventListener('click', () => {
    $('ended').hidden = true;
    join(client, startMedia);
  });

  keepScreenOn(client);
  join(client, startMedia);
}

// Joining does not wait for the camera prompt: the patient already sees and hears
// the doctor while deciding, and the camera is sent as soon as it is allowed.
function join(client, startMedia) {
  client.connect();
  startMedia().then(() => updateFlipButton());
}

function bindFlipButton(client) {
  const button = $('flip');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await client.switchCamera();
    } catch (err) {
      showToast(t(err.name === 'OverconstrainedError' ? 'patient.no_other_camera' : 'patient.other_camera_failed'));
    } finally {
      button.disabled = false;
    }
  });
  navigator.mediaDevices?.addEventListener('devicechange', updateFlipButton);
}

// Only offer switching when there is something to switch to. Device lists are
// complete only once camera permission is granted, hence after startMedia.
async function updateFlipButton() {
  const devices = await navigator.mediaDevices?.enumerateDevices() ?? [];
  $('flip').hidden = devices.filter((d) => d.kind === 'videoinput').length < 2;
}

function hideToast(text) {
  const toast = $('toast');
  if (toast.textContent === text) toast.hidden = true;
}

// The own preview stays small so it never covers the doctor; a tap (or Enter/Space)
// makes it larger, e.g. to look at the marks the doctor drew, and smaller again.
function bindSelfViewSize(figure) {
  const toggle = () => {
    const enlarged = figure.classList.toggle('enlarged');
    figure.setAttribute('aria-pressed', String(enlarged));
  };
  figure.addEventListener('click', toggle);
  figure.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' && event.key !== ' ') return;
    event.preventDefault();
    toggle();
  });
}

function showToast(text) {
  const toast = $('toast');
  toast.textContent = text;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toast.hidden = true; }, TOAST_MS);
}

// Patients often hold the phone still to show their skin without touching the
// screen; without a wake lock it would dim and lock mid-consultation.
function keepScreenOn(client) {
  let lock = null;
  let requesting = false;
  const request = async () => {
    const held = lock && !lock.released;
    const wanted = client.state !== 'closed' && document.visibilityState === 'visible';
    if (held || requesting || !wanted || !navigator.wakeLock) return;
    requesting = true;
    try {
      lock = await navigator.wakeLock.request('screen');
      if (client.state === 'closed') lock.release();
    } catch {
      // Refused (e.g. battery saver): the screen may dim, nothing else is affected.
    } finally {
      requesting = false;
    }
  };
  // The browser drops the lock whenever the page is hidden; take it again on return.
  document.addEventListener('visibilitychange', request);
  client.addEventListener('statechange', () => {
    if (client.state === 'closed') lock?.release();
    else request();
  });
  request();
}
