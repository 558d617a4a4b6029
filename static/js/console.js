// The doctor's / expert's desktop console: all remote videos (patient first and
// largest), own preview, participant list, controls; recording, the analysis of the
// patient's video and the clinical photos (console-analysis.js).
import {AnalysisState} from './analysis-state.js';
import {bindPatientAnnotations} from './annotation-tools.js';
import {ConsultClient} from './client.js';
import {ConnectionQuality} from './connection-quality.js';
import {bindAnalysisPanel, bindCapturePanel, bindConsoleAlert, bindRecording} from './console-analysis.js';
import {bindLanguageSwitch, initLanguage, onLanguageChange, roleName, t} from './i18n.js';
import {labelledIcon, renderIcons} from './icons.js';
import {bindRecordingConsent} from './recording-consent.js';
import {
  RemoteMediaView, bindLeaveButton, bindLocalPreview, bindMediaNotice, bindMuteButton, bindSoundButton,
  byRole, showConnectionState, showEnded, showStageMessage, takeTokenFromHash,
} from './call-ui.js';
import {ViewSizes} from './view-sizes.js';
import {bindViewerMark} from './viewer-mark.js';

const $ = (id) => document.getElementById(id);
const ROLE_ORDER = ['patient', 'doctor', 'expert', 'trainer'];
// Who answered the running recording's question, and how (participant id -> given).
const consents = {recordingId: null, answers: new Map()};

renderIcons();
const token = takeTokenFromHash();
await initLanguage({token});
bindLanguageSwitch($('language'));
if (token) start(token);
else showEnded('no_token');

function start(joinToken) {
  const client = new ConsultClient(joinToken);
  window.consultClient = client;

  const quality = new ConnectionQuality(client);
  const view = new RemoteMediaView($('remote'), {roleOrder: ROLE_ORDER, quality, spotlight: true});
  view.addEventListener('spotlightchange', () => render());
  // The server sends each video no larger than its tile is drawn (spotlight resizes them).
  new ViewSizes(client, $('remote'));
  // Marks over the patient's tile, and the drawing tools for those who may annotate.
  const syncAnnotations = bindPatientAnnotations(client, view);
  const analysis = new AnalysisState(client);
  const alert = bindConsoleAlert(client);
  bindRecording(client, alert);
  const syncMesh = bindAnalysisPanel(client, analysis, view);
  bindCapturePanel(client, analysis);
  const render = () => {
    view.render(client);
    syncAnnotations();
    syncMesh();
    renderPeople(client);
    renderRoomName(client);
    showStageMessage($('stage-message'), client, 'stage.waiting_for_others');
  };
  client.addEventListener('participants', render);
  client.addEventListener('tracks', render);
  client.addEventListener('videostate', () => view.render(client));  // a video paused or resumed to us
  client.addEventListener('localmedia', () => renderPeople(client));  // our own muted icons
  client.addEventListener('consent', (event) => {
    const {participant, recording_id: recordingId, given} = event.detail;
    if (recordingId !== consents.recordingId) consents.answers.clear();
    consents.recordingId = recordingId;
    consents.answers.set(participant, given);
    renderPeople(client);
  });
  client.addEventListener('recording', () => {
    if (client.recording.recording_id !== consents.recordingId) consents.answers.clear();
    renderPeople(client);
  });
  const showState = () => {
    if (client.state === 'closed') showEnded(client.endReason);
    else showConnectionState($('banner'), client.state, quality);
  };
  client.addEventListener('statechange', () => {
    render();
    showState();
  });
  onLanguageChange(render);
  quality.addEventListener('change', () => {
    view.render(client);
    showState();
  });

  bindSoundButton($('sound'), view, client);
  bindViewerMark(client, $('remote'));  // the room's live watermark, if any
  bindLocalPreview(client, $('local-video'), $('self-view'));
  bindMuteButton($('mic'), client, 'audio', {muteLabel: 'control.mute', unmuteLabel: 'control.unmute'});
  bindMuteButton($('cam'), client, 'video', {muteLabel: 'control.stop_video', unmuteLabel: 'control.start_video'});
  bindRecordingConsent(client, {
    box: $('consent'), text: $('consent-text'), held: $('consent-held'), proceed: $('consent-continue'),
    leave: $('consent-leave'),
  });
  const startMedia = bindMediaNotice(client, {
    box: $('media-notice'), text: $('media-notice-text'), retry: $('media-retry'), audience: 'media.audience.others',
  });

  bindLeaveButton($('leave'), client);
  $('rejoin').addEventListener('click', () => {
    $('ended').hidden = true;
    join(client, startMedia);
  });

  join(client, startMedia);
}

// Joining does not wait for the camera prompt; the camera is sent once allowed.
function join(client, startMedia) {
  client.connect();
  startMedia();
}

function renderRoomName(client) {
  const name = client.room?.name;
  const heading = $('room-name');
  if (name) delete heading.dataset.i18n;  // the room's own name, in no language of ours
  heading.textContent = name ?? t('console.room_default');
  document.title = name ? t('console.title_named', {room: name}) : t('console.title');
}

function renderPeople(client) {
  const recording = client.recording.state === 'on' ? client.recording.recording_id : null;
  const answer = (person) => (recording !== null && recording === consents.recordingId
    ? consents.answers.get(person.id) : undefined);
  const items = [...client.participants.values()].sort(byRole(ROLE_ORDER))
    .map((person) => personItem(person, {answer: answer(person)}));
  if (client.self) {
    const muted = {audio: client.isOff('audio'), video: client.isOff('video')};
    items.unshift(personItem({...client.self, muted}, {isSelf: true}));
  }
  $('people').replaceChildren(...items);
}

/** A participant in the list; `answer`: their answer to the running recording, if any. */
function personItem(person, {isSelf = false, answer} = {}) {
  const item = document.createElement('li');
  item.className = 'person';
  item.dataset.participantId = person.id;

  const name = document.createElement('span');
  name.className = 'person-name';
  name.textContent = isSelf ? t('console.you_named', {name: person.name}) : person.name;

  const role = document.createElement('span');
  role.className = 'person-role';
  role.textContent = roleName(person.role);

  const status = document.createElement('span');
  status.className = 'person-status';
  if (person.muted?.audio) status.append(labelledIcon('mic-off', t('tile.mic_off')));
  if (person.muted?.video) status.append(labelledIcon('cam-off', t('tile.camera_off')));

  item.append(name, role, status);
  if (answer !== undefined) {
    const consent = document.createElement('span');
    consent.className = 'person-consent';
    consent.dataset.given = String(answer);
    consent.textContent = t(answer ? 'console.consent.given' : 'console.consent.refused');
    item.append(consent);
  }
  return item;
}
