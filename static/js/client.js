/**
 * ConsultClient: the browser side of the consult-sfu signalling protocol v1
 * (docs/PROTOCOL.md). The server always makes the offers; this client only answers.
 *
 * Events (plain Events: read the new values from the client's properties):
 *   statechange  - `state` or `endReason` changed
 *   participants - `self`, `room` or `participants` changed
 *   tracks       - remote media changed, see remoteMedia()
 *   localmedia   - `localStream`, `facingMode` or `muted` changed
 *   servererror  - CustomEvent; `detail` is a non-fatal `error` message from the server,
 *                  plus `about`: what of ours it refuses ('annotate', 'record',
 *                  'capture') or null, and then `action` (e.g. 'start')
 *   annotations  - `annotations` (the room's board) or `pendingAnnotations` changed
 *   annotationerror - CustomEvent; `detail` is {code, message, op}: one of our own
 *                  annotate operations was refused (or never answered: code 'no_reply')
 *   analysis     - CustomEvent; `detail` is an `analysis` or `processor-failed` message
 *   recording    - `recording` changed (the server tells everyone whether the room is
 *                  being recorded: right after joining and on every change)
 *   videostate   - `pausedVideo` changed: the server paused or resumed a remote video
 *                  to us alone (our downlink is too weak for it; its audio goes on)
 *   waiting      - `clinicNotified` changed: the clinic's systems took the news that we
 *                  wait for a clinician (`clinic-notified`), or that wait ended
 *   joined       - a join (first or after a reconnect) completed: the new session knows
 *                  nothing of what the page told the previous one (e.g. reportView)
 *
 * `state` is one of connecting | connected | reconnecting | closed.
 */

import {AnnotationBoard, LIMITS, shapeColor} from './annotation-board.js';
import {PlayoutController} from './playout-policy.js';

const PROTOCOL_VERSION = 1;
const PING_INTERVAL_MS = 10_000;
// Every ping gets a pong, so this much silence means the socket is dead even when
// the browser has not noticed yet (a half-open TCP connection after a network change).
const SILENCE_LIMIT_MS = 25_000;
// The server drops sockets that have not joined after 10 s; one that is not joined by
// then is stuck (e.g. still connecting through a dead network), so give up on it.
const JOIN_TIMEOUT_MS = 10_000;
const ICE_GATHERING_TIMEOUT_MS = 3_000;
// ICE often recovers from a short glitch by itself; only re-join when it does not.
const MEDIA_DOWN_GRACE_MS = 4_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8_000;

// Re-joining cannot fix these token problems. (Any fatal error that refuses the join
// itself ends the session too, see _onError.)
const FATAL_ERRORS = new Set(['unauthorized', 'token_expired', 'wrong_room', 'stale_link', 'link_revoked']);
// A join refused with these may succeed a moment later (the server's shared state is
// out of reach): tried again after the backoff, the page saying it is connecting.
const RETRY_ERRORS = new Set(['unavailable']);
// Sockets closed with these codes were refused for good (token or room problems). The
// reason shown is the fatal error's code; the default is for when none was read.
const FATAL_CLOSE_CODES = new Map([[4401, 'unauthorized'], [4403, 'wrong_room']]);
// Of the server's `closed` reasons only a server fault, or the room's call moving to
// another node of the service (moved), is worth re-joining after. The others are
// decisions (left, kicked, room-closed) or another tab or device taking over this
// identity (replaced), which re-joining would fight.
const RETRYABLE_CLOSE_REASONS = new Set(['error', 'moved']);
// Whom a patient in the waiting room waits for (signalling/waiting_room.py CLINICIAN_ROLES).
const CLINICIAN_ROLES = new Set(['doctor', 'expert']);

// Error codes only an `annotate` operation gets (annotate/model.py, board.py). The
// generic `forbidden` and `rate_limited` answer one too when one is outstanding.
const ANNOTATION_ERRORS = new Set([
  'bad_annotation', 'unknown_shape', 'too_many_points', 'out_of_range', 'too_long', 'board_full', 'nothing_to_undo',
]);
const SHARED_ERRORS = new Set(['forbidden', 'rate_limited']);
// Our own operation's event normally comes back within a round trip; one that has not
// after this long was lost (e.g. dropped by the server's flood guard), and its local
// preview goes.
const ANNOTATION_REPLY_TIMEOUT_MS = 10_000;
// A snapshot asked for and not arrived after this long may be asked for again.
const SNAPSHOT_RETRY_MS = 5_000;

// Errors a `record` or `capture` request is refused with (signalling/session.py). The
// server answers only refusals and confirms by broadcasting the new state, so a request
// counts as outstanding until that state arrives, an error takes it, or this long.
const CONTROL_ERRORS = new Set(['recording_failed', 'bad_state', 'forbidden', 'rate_limited', 'bad_message', 'internal']);
const CONTROL_REPLY_MS = 10_000;
const NOT_RECORDING = Object.freeze({type: 'recording', state: 'off'});
// The server's default photo protocol (media/processors/face_processor.py DEFAULT_PROTOCOL).
const DEFAULT_CAPTURE_POSES = Object.freeze(['frontal', 'left45', 'right45']);

const KINDS = ['audio', 'video'];
const AUDIO_CONSTRAINTS = {echoCancellation: true, noiseSuppression: true};
const VIDEO_CONSTRAINTS = {width: {ideal: 1280}, height: {ideal: 720}};

function defaultSocketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${location.host}/ws`;
}

export class ConsultClient extends EventTarget {
  constructor(token, {url = defaultSocketUrl()} = {}) {
    super();
    this.token = token;
    this.url = url;
    this.state = 'connecting';
    this.endReason = null;          // why the session ended, once state is 'closed'
    this.self = null;               // our own participant object from `joined`
    this.room = null;
    // How to reach the clinic, as the server last said: the room's line (`joined`) or a
    // refused join's; null when none was said (see clinic-contact.js for the fallback).
    this.contact = null;
    // True from `clinic-notified` until a clinician joins or this connection goes: only
    // then may the page say the clinic knows we are here.
    this.clinicNotified = false;
    this.participants = new Map();  // id -> participant object, the others only
    this.slots = new Map();         // receive mid -> {participant, kind}; idle mids absent
    this.localStream = new MediaStream();
    this.facingMode = 'user';
    this.muted = {audio: false, video: false};  // what the user chose
    this.annotations = new AnnotationBoard();   // the room's drawing over the patient's video
    this.pendingAnnotations = new Map();        // ref -> shape we sent, shown until its event arrives
    this._annotationOps = [];                   // our operations awaiting an event or error, oldest first
    this._annotationSeq = 0;
    this._snapshotAsked = null;                 // {seq, at} of the snapshot we are waiting for
    // The room's `recording` message as last heard: {state: 'on', by, recording_id, t_ms}
    // or {state: 'off', reason?}. Kept through a reconnect (better to over-tell than to
    // hide a recording); the new session's message follows `joined`.
    this.recording = NOT_RECORDING;
    this._controls = [];                        // our record/capture requests awaiting an outcome
    // Participant id -> reason (e.g. 'weak-connection') for each remote video the server
    // has paused to us (`video-state`); absent when it flows.
    this.pausedVideo = new Map();
    this._conn = null;              // the current socket and peer connection, see _open()
    this._retryTimer = null;
    this._attempt = 0;
    this._joinedBefore = false;
    // Coming back online is the best moment to retry; don't sit out the backoff.
    window.addEventListener('online', () => this._retryNow());
  }

  // ---- public API ---------------------------------------------------------

  /** Opens the socket and joins. Also re-joins after the session has ended. */
  connect() {
    if (this._conn || this._retryTimer) return;
    this.endReason = null;
    this._attempt = 0;
    this._joinedBefore = false;
    this._open();
  }

  /** Leaves for good: no reconnecting, camera and microphone released. */
  leave() {
    if (this.state === 'closed') return;
    this._send({type: 'leave'});
    this._end('left');
  }

  /**
   * Opens camera and microphone (again, when called after a failure). Resolves to
   * null, or to the getUserMedia error when the camera could not be opened; the
   * microphone alone may still have worked, see localTrack('audio').
   */
  async startMedia() {
    let stream;
    let problem = null;
    try {
      stream = await getUserMedia({
        audio: AUDIO_CONSTRAINTS,
        video: {...VIDEO_CONSTRAINTS, facingMode: 'user'},
      });
    } catch (err) {
      problem = err;
      // The consultation can still go on by voice when the camera is missing, busy
      // or blocked on its own.
      stream = await getUserMedia({audio: AUDIO_CONSTRAINTS}).catch(() => null);
    }
    if (stream) {
      this.facingMode = 'user';
      this._useTracks(stream.getTracks());
    }
    return problem;
  }

  /** Toggles between the front ('user') and back ('environment') camera. */
  async switchCamera() {
    const current = this.localTrack('video');
    const audio = this.localStream.getAudioTracks();
    const next = this.facingMode === 'user' ? 'environment' : 'user';
    // Many phones cannot open two cameras at once, so let go of the current one first.
    current?.stop();
    try {
      const track = await openCamera({facingMode: {exact: next}});
      this.facingMode = next;
      this._useTracks([...audio, track]);
    } catch (err) {
      // Take the previous camera back so the others still see us.
      const deviceId = current?.getSettings().deviceId;
      const previous = deviceId ? await openCamera({deviceId: {exact: deviceId}}).catch(() => null) : null;
      this._useTracks(previous ? [...audio, previous] : audio);
      throw err;
    }
  }

  /** Mutes or unmutes 'audio' or 'video' locally and tells the others. */
  setMuted(kind, muted) {
    this.muted[kind] = muted;
    for (const track of this.localStream.getTracks()) {
      if (track.kind === kind) track.enabled = !muted;
    }
    this._syncMuted();
    this._emit('localmedia');
  }

  /** True when we send no 'audio' or 'video': muted by the user, or no working device. */
  isOff(kind) {
    return this.muted[kind] || !this.localTrack(kind);
  }

  /** The live local track of a kind, or null. */
  localTrack(kind) {
    return this.localStream.getTracks().find((t) => t.kind === kind && t.readyState === 'live') ?? null;
  }

  /** True while joined: signalling works (media may still be connecting). */
  /** The RTCPeerConnection of the current connection, or null (for getStats). */
  get peerConnection() {
    return this._conn?.pc ?? null;
  }

  get joined() {
    return Boolean(this._conn?.joined);
  }

  /** True when our join token grants `permission` (e.g. 'annotate', 'moderate'). */
  can(permission) {
    return Boolean(this.self?.permissions?.includes(permission));
  }

  /**
   * Sends a shape to draw over the patient's video (docs/PROTOCOL.md, annotate/model.py)
   * and shows it in `pendingAnnotations` until the server's event replaces it. Returns
   * its `ref`, or null when it cannot be sent now (not joined, no permission).
   */
  annotate(shape) {
    const entry = this._sendAnnotation('add', {shape}, `c-${this._annotationSeq + 1}`);
    if (!entry) return null;
    const {ref} = entry;
    const preview = {...shape, color: shapeColor(shape)};
    if (shape.kind !== 'text') preview.width = shape.width ?? LIMITS.defaultWidth;
    this.pendingAnnotations.set(ref, {ref, author: this.self.identity, ...preview});
    this._emit('annotations');
    return ref;
  }

  /** Removes our newest shape. */
  undoAnnotation() {
    return Boolean(this._sendAnnotation('undo', {}));
  }

  /** Removes everyone's shapes (needs 'moderate'), or only those of `shapesOf`. */
  clearAnnotations({shapesOf = null} = {}) {
    return Boolean(this._sendAnnotation('clear', shapesOf === null ? {} : {shapes_of: shapesOf}));
  }

  /** Starts or stops recording the room (needs 'record'); false when it cannot be sent now. */
  setRecording(on) {
    return this._sendControl('record', on ? 'start' : 'stop', {});
  }

  /**
   * Answers being told the room is recorded: continue (true) or leave (false); the server
   * audits it under our identity. False when it cannot be sent now.
   */
  answerRecording(recordingId, given) {
    if (this._conn?.ws?.readyState !== WebSocket.OPEN || !this.joined) return false;
    this._send({type: 'consent', recording_id: recordingId, given});
    return true;
  }

  /**
   * Starts the guided photo protocol on the patient's video (needs 'record'): `poses`
   * (1-8 of frontal, left45, right45; default all three), `toleranceDeg` (2-20; default
   * the server's, 8). Progress comes as `analysis` events of kind `capture`, photos as
   * kind `still`.
   */
  startCapture({poses = DEFAULT_CAPTURE_POSES, toleranceDeg = null} = {}) {
    // The poses are always sent: a start without them reaches the server's processor as
    // {"capture": null}, which it takes for "stop" (signalling/live_captures.py), so
    // nothing would start.
    const fields = {poses: [...poses]};
    if (toleranceDeg !== null) fields.tolerance_deg = toleranceDeg;
    return this._sendControl('capture', 'start', fields);
  }

  /** Stops the photo protocol; photos already taken are kept. */
  stopCapture() {
    return this._sendControl('capture', 'stop', {});
  }

  /**
   * Tells the server at what size we draw remote videos, so that it sends no simulcast
   * layer larger than that: participant id -> {width, height} in device pixels (0x0:
   * not visible). Only changes need sending; false when it cannot be sent now.
   */
  reportView(videos) {
    if (this._conn?.ws?.readyState !== WebSocket.OPEN || !this.joined) return false;
    this._send({type: 'view', videos});
    return true;
  }

  /** Asks for the whole board again (also done by itself when events went missing). */
  requestAnnotations() {
    if (!this._conn?.joined) return;
    this._snapshotAsked = {seq: this._annotationSeq, at: Date.now()};
    this._send({type: 'annotations-get'});
  }

  /** Remote media of known participants: [{mid, kind, participantId, track}]. */
  remoteMedia() {
    const pc = this._conn?.pc;
    if (!pc) return [];
    const media = [];
    for (const transceiver of pc.getTransceivers()) {
      const slot = this.slots.get(transceiver.mid);
      if (slot && this.participants.has(slot.participant)) {
        media.push({
          mid: transceiver.mid,
          kind: slot.kind,
          participantId: slot.participant,
          track: transceiver.receiver.track,
        });
      }
    }
    return media;
  }

  /** Playout floors the page set on remote videos (ms by mid; 0: the browser's own), see playout-policy.js. */
  playoutTargets() {
    const pc = this._conn?.pc;
    if (!pc) return {};
    return Object.fromEntries(pc.getTransceivers()
      .filter((t) => t.mid && t.receiver.track?.kind === 'video')
      .map((t) => [t.mid, t.receiver.jitterBufferTarget ?? 0]));
  }

  // ---- connection lifecycle ----------------------------------------------

  _open() {
    this._retryTimer = null;
    this._setState(this._joinedBefore ? 'reconnecting' : 'connecting');
    const ws = new WebSocket(this.url);
    const conn = {
      ws,
      pc: null,
      queue: Promise.resolve(),
      joined: false,
      fatalError: null, // code of the last fatal `error`, explains a refusing close
      senders: {},      // kind -> RTCRtpSender of the mid the server assigned us
      sentMuted: {},    // kind -> muted flag the server last heard from us
      simulcast: null,  // the last offer's camera layers: [{rid, scale_down, max_bitrate}]
      activeRids: null, // RIDs the server wants our camera to send (`layers`); null: all
      encodings: Promise.resolve(),  // the camera sender's setParameters calls, one at a time
      lastHeard: Date.now(),
      joinTimer: setTimeout(() => this._reconnect(conn), JOIN_TIMEOUT_MS),
      pingTimer: null,
      mediaDownTimer: null,
    };
    this._conn = conn;
    ws.onopen = () => this._send({type: 'join', v: PROTOCOL_VERSION, token: this.token});
    ws.onmessage = (event) => this._receive(conn, event.data);
    ws.onclose = (event) => this._enqueue(conn, () => this._onSocketClosed(conn, event));
  }

  _receive(conn, data) {
    conn.lastHeard = Date.now();
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.warn('consult: ignoring a frame that is not JSON');
      return;
    }
    this._enqueue(conn, () => this._handle(conn, msg));
  }

  // Steps run one at a time, in arrival order: answering an offer takes several
  // awaits, and a `tracks`, `closed` or socket close arriving meanwhile must apply
  // after it. Steps of a connection that has been replaced are skipped.
  _enqueue(conn, step) {
    conn.queue = conn.queue
      .then(() => (conn === this._conn ? step() : undefined))
      .catch((err) => {
        if (conn !== this._conn) return;  // its peer connection was closed under it
        console.error('consult: signalling step failed', err);
        // A half-applied offer leaves the peer connection in an unknown state.
        this._reconnect(conn);
      });
  }

  _handle(conn, msg) {
    switch (msg.type) {
      case 'joined': return this._onJoined(conn, msg);
      case 'offer': return this._onOffer(conn, msg);
      case 'tracks': return this._onTracks(msg.tracks);
      case 'participant-joined':
      case 'participant-updated': return this._onParticipant(msg.participant);
      case 'participant-left': return this._onParticipantLeft(msg.participant_id);
      case 'annotation': return this._onAnnotation(msg);
      case 'annotation-snapshot': return this._onAnnotationSnapshot(msg);
      case 'analysis':
      case 'processor-failed':
        if (msg.kind === 'capture' && msg.state === 'started') this._settleControl('capture', 'start');
        if (msg.kind === 'capture' && msg.state === 'stopped') this._settleControl('capture', 'stop');
        this.dispatchEvent(new CustomEvent('analysis', {detail: msg}));
        return undefined;
      case 'recording': return this._onRecording(msg);
      case 'consent':
        this.dispatchEvent(new CustomEvent('consent', {detail: msg}));
        return undefined;
      case 'video-state': return this._onVideoState(msg);
      case 'clinic-notified': return this._setClinicNotified(true);
      case 'layers': return this._onLayers(conn, msg);
      case 'error': return this._onError(conn, msg);
      case 'closed': return this._onClosed(msg.reason);
      case 'pong': return undefined;  // lastHeard, already updated, is all it is for
      default:
        // A newer server may send more; the protocol only ever adds.
        console.warn('consult: ignoring message type', msg.type);
        return undefined;
    }
  }

  _onJoined(conn, msg) {
    clearTimeout(conn.joinTimer);
    conn.joined = true;
    this._joinedBefore = true;
    this.self = msg.participant;
    this.room = msg.room;
    this.contact = typeof msg.room?.contact === 'string' ? msg.room.contact : null;
    this.participants = new Map((msg.participants ?? []).map((p) => [p.id, p]));
    conn.sentMuted = {audio: false, video: false, ...msg.participant.muted};
    conn.pc = new RTCPeerConnection({iceServers: msg.ice_servers ?? []});
    conn.pc.onconnectionstatechange = () => this._onPeerState(conn);
    // smooth remote video on a bad network, within the latency budget
    conn.playout = new PlayoutController(conn.pc);
    conn.pingTimer = setInterval(() => this._ping(conn), PING_INTERVAL_MS);
    // The server sends the board's snapshot right after `joined`.
    this._snapshotAsked = {seq: this._annotationSeq, at: Date.now()};
    // After a reconnect the new session must learn what the user muted before.
    this._syncMuted();
    this._emit('participants');
    this._emit('joined');
  }

  async _onOffer(conn, offer) {
    const {pc} = conn;
    if (!pc) throw new Error('offer before joined');
    await pc.setRemoteDescription({type: 'offer', sdp: offer.sdp});
    conn.senders = prepareTransceivers(pc, offer.publish);
    await this._attachLocalTracks(conn);
    await pc.setLocalDescription(await pc.createAnswer());
    conn.simulcast = offer.simulcast ?? null;
    await this._tuneCamera(conn);
    // The server takes no trickled candidates: they must all be in the answer.
    await iceGatheringDone(pc, ICE_GATHERING_TIMEOUT_MS);
    if (conn !== this._conn) return;
    this._send({type: 'answer', rev: offer.rev, sdp: pc.localDescription.sdp});
    const before = this.slots;
    this.slots = new Map(Object.entries(offer.tracks ?? {}).filter(([, slot]) => slot));
    this._forgetPausedVideoOfFreedSlots(before);
    // With no media lines there is no ICE to wait for: signalling is all there is.
    if (pc.getTransceivers().length === 0) this._setState('connected');
    this._emit('tracks');
  }

  _onTracks(changes) {
    const before = new Map(this.slots);
    for (const [mid, slot] of Object.entries(changes ?? {})) {
      if (slot) this.slots.set(mid, slot);
      else this.slots.delete(mid);
    }
    this._forgetPausedVideoOfFreedSlots(before);
    this._emit('tracks');
  }

  _onVideoState(msg) {
    // Checked here because a throw in a signalling step would force a reconnect.
    if (typeof msg.participant !== 'string' || !msg.participant || typeof msg.paused !== 'boolean') {
      console.warn('consult: ignoring a malformed video-state message');
      return;
    }
    if (msg.paused) this.pausedVideo.set(msg.participant, typeof msg.reason === 'string' ? msg.reason : null);
    else if (!this.pausedVideo.delete(msg.participant)) return;  // it was not paused
    this._emit('videostate');
  }

  _onLayers(conn, msg) {
    // Checked here because a throw in a signalling step would force a reconnect.
    if (msg.kind !== 'video' || !Array.isArray(msg.active) || !msg.active.every((rid) => typeof rid === 'string')) {
      console.warn('consult: ignoring a malformed layers message');
      return;
    }
    conn.activeRids = new Set(msg.active);
    // Not awaited: signalling need not wait for the encoder, and a failure is only logged.
    this._tuneCamera(conn);
  }

  /**
   * Sets our camera sender's layers (sizes from the offer, on/off from `layers`) after
   * the previous setParameters call has settled: two at once fail, and the later
   * change would be lost.
   */
  _tuneCamera(conn) {
    const apply = () => applySimulcastLayers(conn.senders.video, conn.simulcast, conn.activeRids);
    conn.encodings = conn.encodings
      .then(() => (conn === this._conn ? apply() : undefined))  // a closed one needs nothing
      .catch((err) => {
        // the call goes on with the browser's own sizes, or a layer sent that nobody
        // needs: worse for a weak uplink or downlink, not broken
        console.warn('consult: setting simulcast layers failed', err);
      });
    return conn.encodings;
  }

  /**
   * A participant whose video slot went idle or to someone else (and who has no other
   * video slot) sends us no video to be paused: drop its notice so it cannot stick.
   */
  _forgetPausedVideoOfFreedSlots(before) {
    const sending = new Set([...this.slots.values()].filter((s) => s.kind === 'video').map((s) => s.participant));
    let changed = false;
    for (const slot of before.values()) {
      if (slot.kind === 'video' && !sending.has(slot.participant)) {
        changed = this.pausedVideo.delete(slot.participant) || changed;
      }
    }
    if (changed) this._emit('videostate');
  }

  _onParticipant(participant) {
    if (participant.id === this.self?.id) this.self = participant;
    else this.participants.set(participant.id, participant);
    // A clinician came: the wait the clinic was told of is over (a later one claims nothing).
    if (CLINICIAN_ROLES.has(participant.role)) this._setClinicNotified(false);
    this._emit('participants');
  }

  _setClinicNotified(told) {
    if (this.clinicNotified === told) return;
    this.clinicNotified = told;
    this._emit('waiting');
  }

  _onParticipantLeft(participantId) {
    this.participants.delete(participantId);
    if (this.pausedVideo.delete(participantId)) this._emit('videostate');
    this._emit('participants');
  }

  _onAnnotation(event) {
    const {applied, gap} = this.annotations.applyEvent(event);
    for (const done of applied) this._settleOwnOperation(done);
    if (gap && (!this._snapshotAsked || Date.now() - this._snapshotAsked.at > SNAPSHOT_RETRY_MS)) {
      this.requestAnnotations();
    }
    if (applied.length) this._emit('annotations');
  }

  _onAnnotationSnapshot(snapshot) {
    this.annotations.applySnapshot(snapshot);
    // Our operations sent before the request were all handled before this snapshot
    // was taken: their events (or errors) came first, or were lost; either way the
    // snapshot now shows the outcome, and their previews must go.
    const asked = this._snapshotAsked;
    this._snapshotAsked = null;
    if (asked) {
      for (const op of this._annotationOps.filter((o) => o.seq <= asked.seq)) this._forgetOperation(op);
    }
    this._emit('annotations');
  }

  /** Our own event: the operation it answers is done, its preview replaced by the shape. */
  _settleOwnOperation(event) {
    if (!this.self || event.author !== this.self.identity) return;
    const op = this._annotationOps.find((o) => o.op === event.op && (event.op !== 'add' || o.ref === event.ref));
    if (op) this._forgetOperation(op);
  }

  /** Sends one `annotate` operation and tracks it until answered; the entry, or null. */
  _sendAnnotation(op, fields, ref = null) {
    if (!this._conn?.joined || !this.can('annotate')) return null;
    this._annotationSeq += 1;
    const entry = {seq: this._annotationSeq, op, ref, timer: null};
    entry.timer = setTimeout(() => {
      this._forgetOperation(entry);
      this._emit('annotations');
      this._annotationError({code: 'no_reply', message: 'the server did not confirm the annotation'}, op);
    }, ANNOTATION_REPLY_TIMEOUT_MS);
    this._annotationOps.push(entry);
    this._send({type: 'annotate', op, ...(ref === null ? {} : {ref}), ...fields});
    return entry;
  }

  _forgetOperation(entry) {
    clearTimeout(entry.timer);
    this._annotationOps = this._annotationOps.filter((o) => o !== entry);
    if (entry.ref !== null) this.pendingAnnotations.delete(entry.ref);
  }

  /** Drops every outstanding operation and its preview (the connection is gone). */
  _forgetOperations() {
    for (const entry of this._annotationOps) clearTimeout(entry.timer);
    this._annotationOps = [];
    this.pendingAnnotations.clear();
    this._snapshotAsked = null;
  }

  _annotationError(msg, op) {
    this.dispatchEvent(new CustomEvent('annotationerror', {detail: {code: msg.code, message: msg.message, op}}));
  }

  _onRecording(msg) {
    this.recording = msg;
    this._settleControl('record', msg.state === 'on' ? 'start' : 'stop');
    this._emit('recording');
  }

  /** Sends a `record` or `capture` request and remembers it until its outcome is known. */
  _sendControl(about, action, fields) {
    if (!this._conn?.joined || !this.can('record')) return false;
    this._expireControls();
    this._controls.push({about, action, at: Date.now()});
    this._send({type: about, action, ...fields});
    return true;
  }

  _settleControl(about, action) {
    const index = this._controls.findIndex((c) => c.about === about && c.action === action);
    if (index !== -1) this._controls.splice(index, 1);
  }

  _expireControls() {
    const now = Date.now();
    this._controls = this._controls.filter((c) => now - c.at < CONTROL_REPLY_MS);
  }

  _onError(conn, msg) {
    if (RETRY_ERRORS.has(msg.code) && !conn.joined) {
      this._reconnect(conn);
      return;
    }
    // A refused join (bad token, closed or full room, unsupported version) would be
    // refused again. Fatal errors later on (a flood, a missed answer) are worth a
    // fresh session, which the socket closing brings.
    if (FATAL_ERRORS.has(msg.code) || (msg.fatal && !conn.joined)) {
      // A refused join says how to reach the clinic (the room's line, or the server's).
      if (typeof msg.contact === 'string') this.contact = msg.contact;
      this._end(msg.code);
      return;
    }
    if (msg.fatal) conn.fatalError = msg.code;
    console.warn(`consult: server error ${msg.code}: ${msg.message}`);
    // The server answers each operation in order, so an annotation error belongs to
    // our oldest outstanding one.
    const oldest = this._annotationOps[0];
    let about = {about: null};
    if (oldest && (ANNOTATION_ERRORS.has(msg.code) || SHARED_ERRORS.has(msg.code))) {
      this._forgetOperation(oldest);
      this._emit('annotations');
      this._annotationError(msg, oldest.op);
      about = {about: 'annotate', action: oldest.op};
    } else if (ANNOTATION_ERRORS.has(msg.code)) {
      this._annotationError(msg, null);
      about = {about: 'annotate', action: null};
    } else if (CONTROL_ERRORS.has(msg.code)) {
      // Otherwise it answers our oldest record/capture request, if one is waiting.
      this._expireControls();
      const control = this._controls.shift();
      if (control) about = {about: control.about, action: control.action};
    }
    this.dispatchEvent(new CustomEvent('servererror', {detail: {...msg, ...about}}));
  }

  _onClosed(reason) {
    // A retryable close is followed by the socket closing, which re-joins.
    if (!RETRYABLE_CLOSE_REASONS.has(reason)) this._end(reason);
  }

  _onSocketClosed(conn, event) {
    if (FATAL_CLOSE_CODES.has(event.code)) this._end(conn.fatalError ?? FATAL_CLOSE_CODES.get(event.code));
    else this._reconnect(conn);
  }

  _onPeerState(conn) {
    if (conn !== this._conn) return;
    clearTimeout(conn.mediaDownTimer);
    const state = conn.pc.connectionState;
    if (state === 'connected') {
      this._attempt = 0;
      this._setState('connected');
    } else if (state === 'disconnected') {
      this._setState('reconnecting');
      conn.mediaDownTimer = setTimeout(() => this._reconnect(conn), MEDIA_DOWN_GRACE_MS);
    } else if (state === 'failed') {
      // 'failed' is final for this peer connection: waiting would not help.
      this._reconnect(conn);
    }
  }

  _ping(conn) {
    if (Date.now() - conn.lastHeard > SILENCE_LIMIT_MS) this._reconnect(conn);
    else this._send({type: 'ping'});
  }

  /** Drops the connection `conn` (if still current) and re-joins after a backoff. */
  _reconnect(conn) {
    if (conn !== this._conn) return;
    this._teardown();
    this._setState(this._joinedBefore ? 'reconnecting' : 'connecting');
    const delay = Math.min(BACKOFF_FIRST_MS * 2 ** this._attempt, BACKOFF_MAX_MS);
    this._attempt += 1;
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _retryNow() {
    if (!this._retryTimer) return;
    clearTimeout(this._retryTimer);
    this._open();
  }

  _end(reason) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this.self = null;  // no longer a participant
    this._teardown();
    this.annotations.reset();
    this._emit('annotations');
    this.recording = NOT_RECORDING;
    this._emit('recording');
    // Release camera and microphone: the camera light going off tells the user
    // that nobody sees them any more.
    for (const track of this.localStream.getTracks()) track.stop();
    this.localStream = new MediaStream();
    this.endReason = reason;
    this._setState('closed');
    this._emit('localmedia');
  }

  /** Closes socket and peer connection; what they told us about the room is stale. */
  _teardown() {
    const conn = this._conn;
    if (!conn) return;
    this._conn = null;
    clearTimeout(conn.joinTimer);
    clearTimeout(conn.mediaDownTimer);
    clearInterval(conn.pingTimer);
    conn.playout?.stop();
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onclose = null;
    conn.ws.close(1000);
    conn.pc?.close();
    this._setClinicNotified(false);  // the next session's server says again, if it still holds
    this.participants = new Map();
    this.slots = new Map();
    // The server's adaptation is per session: the next one starts with all video flowing.
    if (this.pausedVideo.size) {
      this.pausedVideo = new Map();
      this._emit('videostate');
    }
    // What we sent on this socket may or may not have been applied: the next
    // connection's snapshot tells. The board's shapes stay up until then.
    this._forgetOperations();
    this._controls = [];  // their outcome, if any, is in the next session's state
    this.annotations.resync();
    this._emit('annotations');
    this._emit('participants');
    this._emit('tracks');
  }

  // ---- local media ----------------------------------------------------------

  _useTracks(tracks) {
    if (this.state === 'closed') {
      // The user left while the camera was opening.
      for (const track of tracks) track.stop();
      return;
    }
    for (const old of this.localStream.getTracks()) {
      if (!tracks.includes(old)) old.stop();
    }
    for (const track of tracks) {
      track.enabled = !this.muted[track.kind];
      // Unplugged, permission revoked, or the OS took the camera for another app.
      track.onended = () => this._localMediaChanged();
    }
    // A new stream object (rather than the old one edited) so pages can tell by
    // identity that their preview needs the new tracks.
    this.localStream = new MediaStream(tracks);
    const facing = this.localTrack('video')?.getSettings().facingMode;
    if (facing) this.facingMode = facing;
    this._localMediaChanged();
  }

  _localMediaChanged() {
    if (this._conn) {
      this._attachLocalTracks(this._conn).catch((err) => console.warn('consult: replaceTrack failed', err));
    }
    this._syncMuted();
    this._emit('localmedia');
  }

  _attachLocalTracks(conn) {
    return Promise.all(
      KINDS.filter((kind) => conn.senders[kind]).map((kind) => conn.senders[kind].replaceTrack(this.localTrack(kind))),
    );
  }

  // Tells the server whenever our audio or video stops or resumes. Having no working
  // device counts as muted too (see isOff), so the others see "camera off" instead
  // of a frozen picture.
  _syncMuted() {
    const conn = this._conn;
    if (!conn?.joined || !this.self?.permissions?.includes('publish')) return;
    for (const kind of KINDS) {
      const muted = this.isOff(kind);
      if (conn.sentMuted[kind] !== muted) {
        conn.sentMuted[kind] = muted;
        this._send({type: 'mute', kind, muted});
      }
    }
  }

  // ---- helpers ------------------------------------------------------------

  _send(msg) {
    const ws = this._conn?.ws;
    if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit('statechange');
  }

  _emit(type) {
    this.dispatchEvent(new Event(type));
  }
}

/**
 * The server's offer fixes the media lines; the client only picks directions: send
 * on the mids the server assigned to our microphone and camera, receive on all
 * others. Returns the senders of the publish mids by kind.
 */
function prepareTransceivers(pc, publish) {
  const kindByMid = new Map(Object.entries(publish ?? {}).map(([kind, mid]) => [mid, kind]));
  const senders = {};
  for (const transceiver of pc.getTransceivers()) {
    if (transceiver.mid === null || transceiver.direction === 'stopped' || transceiver.currentDirection === 'stopped') {
      continue;  // rejected media lines cannot change direction
    }
    const kind = kindByMid.get(transceiver.mid);
    transceiver.direction = kind ? 'sendonly' : 'recvonly';
    if (kind) senders[kind] = transceiver.sender;
  }
  return senders;
}

/**
 * When the server asked for camera layers (`offer.simulcast`, highest first), the browser's
 * answer gave the video sender one encoding per RID but no sizes or rates: set them, and
 * send only the RIDs in `activeRids` (the server's `layers` message; null: all). Run after
 * every offer too, since a renegotiation may reset the encodings.
 */
async function applySimulcastLayers(sender, layers, activeRids) {
  if (!sender) return;
  // Read afresh each time: setParameters takes only what the latest getParameters gave.
  const params = sender.getParameters();
  if (!params.encodings || params.encodings.length < 2) return;  // this browser sends one stream
  const sized = setLayerSizes(params.encodings, layers);
  const switched = setLayersActive(params.encodings, activeRids);
  if (sized || switched) await sender.setParameters(params);
}

/** Sets each encoding's size and rate from the offer's layers; true when any changed. */
function setLayerSizes(encodings, layers) {
  const byRid = new Map((layers ?? []).map((layer) => [layer.rid, layer]));
  let changed = false;
  for (const encoding of encodings) {
    const layer = byRid.get(encoding.rid);
    if (!layer) continue;
    if (encoding.scaleResolutionDownBy !== layer.scale_down || encoding.maxBitrate !== layer.max_bitrate) {
      encoding.scaleResolutionDownBy = layer.scale_down;
      encoding.maxBitrate = layer.max_bitrate;
      changed = true;
    }
  }
  return changed;
}

/**
 * Turns off the encodings the server does not want; true when any changed. A set naming
 * none of ours keeps all on: a mismatch must not take the camera off the call.
 */
function setLayersActive(encodings, activeRids) {
  const known = Boolean(activeRids) && encodings.some((encoding) => activeRids.has(encoding.rid));
  let changed = false;
  for (const encoding of encodings) {
    const active = !known || activeRids.has(encoding.rid);
    if (encoding.active !== active) {
      encoding.active = active;
      changed = true;
    }
  }
  return changed;
}

function iceGatheringDone(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === 'complete') finish();
    };
    // Past the limit the candidates gathered so far have to do.
    const timer = setTimeout(finish, timeoutMs);
    pc.addEventListener('icegatheringstatechange', onChange);
  });
}

function getUserMedia(constraints) {
  if (!navigator.mediaDevices?.getUserMedia) {
    // Browsers hide the API on pages not served over https, and some in-app browsers lack it.
    return Promise.reject(new DOMException('Camera access is not available on this page', 'NotSupportedError'));
  }
  return navigator.mediaDevices.getUserMedia(constraints);
}

async function openCamera(constraints) {
  const stream = await getUserMedia({video: {...VIDEO_CONSTRAINTS, ...constraints}});
  return stream.getVideoTracks()[0];
}
