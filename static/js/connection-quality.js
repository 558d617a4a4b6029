/**
 * How well each remote participant reaches this page, from getStats: per
 * participant 'good', 'weak' (loss, a stalling picture, a long round trip) or 'lost'
 * (nothing arrived for LOST_AFTER_MS of media that should be flowing). Polled twice a
 * second, so trouble shows within about two seconds; it shows on the tile
 * (.tile[data-quality], a label when not good) and clears by itself.
 *
 * Fires `change` when any participant's quality changes; `get(id)` is the latest.
 */

const POLL_MS = 500;
const WINDOW_MS = 2_000;       // loss, frame rate and jitter are judged over this
const LOST_AFTER_MS = 1_500;   // audio alone is 50 packets a second: this much silence is no gap
const WEAK_LOSS = 0.08;        // of packets in the window, after retransmissions
const WEAK_FPS = 6;            // a video decoding fewer frames a second is stalling
const WEAK_RTT_S = 0.6;        // our own round trip: a consultation lags behind it
const WEAK_JITTER_S = 0.1;
const STEADY_POLLS = 2;        // 'weak' and a return to 'good' must hold this long: no flicker

export class ConnectionQuality extends EventTarget {
  constructor(client) {
    super();
    this.client = client;
    this.quality = new Map();  // participant id -> 'good' | 'weak' | 'lost'
    this._samples = [];        // [{at, rtt, byMid: {mid: {received, lost, frames, jitter, kind}}}]
    this._heardAt = new Map(); // participant id -> when media of theirs last arrived
    this._pending = new Map(); // participant id -> {verdict, polls}: a change not yet shown
    this._busy = false;
    setInterval(() => this._poll(), POLL_MS);
  }

  get(id) {
    return this.quality.get(id) ?? null;
  }

  /** Whether media should be arriving from someone and arrives from no one. */
  allLost() {
    const verdicts = [...this.quality.values()];
    return verdicts.length > 0 && verdicts.every((verdict) => verdict === 'lost');
  }

  async _poll() {
    if (this._busy) return;  // the last read is still running
    const pc = this.client.peerConnection;
    if (!pc || this.client.state !== 'connected') {
      this._set(new Map());
      this._samples = [];
      this._heardAt.clear();
      this._pending.clear();
      return;
    }
    this._busy = true;
    try {
      this._samples.push(sample(await pc.getStats(), performance.now()));
      this._samples = this._samples.filter((s, i, all) => all.at(-1).at - s.at <= WINDOW_MS || i === all.length - 2);
      this._set(this._steady(this._judge()));
    } catch {
      // the connection changed under us: the next poll starts over
    } finally {
      this._busy = false;
    }
  }

  _judge() {
    const result = new Map();
    const first = this._samples[0];
    const last = this._samples.at(-1);
    if (!first || first === last) return result;
    const seconds = (last.at - first.at) / 1000;
    const ownLinkWeak = last.rtt !== null && last.rtt > WEAK_RTT_S;
    for (const person of this.client.participants.values()) {
      const mids = [...this.client.slots].filter(([, slot]) => slot.participant === person.id).map(([mid]) => mid);
      let expected = 0;
      let weak = ownLinkWeak;
      for (const mid of mids) {
        const a = first.byMid[mid];
        const b = last.byMid[mid];
        if (!b) continue;
        const kind = b.kind;
        const flowing = kind === 'audio' ? !person.muted?.audio
          : !person.muted?.video && !this.client.pausedVideo.has(person.id);
        if (!flowing || !a) continue;
        expected += 1;
        const received = b.received - a.received;
        const lost = Math.max(0, b.lost - a.lost);
        if (received + lost > 0 && lost / (received + lost) > WEAK_LOSS) weak = true;
        if (kind === 'video' && seconds >= 1 && (b.frames - a.frames) / seconds < WEAK_FPS) weak = true;
        if (b.jitter > WEAK_JITTER_S) weak = true;
      }
      // Silence is measured from the last sample in which anything of theirs arrived.
      const previous = this._samples.at(-2);
      const arrivedNow = mids.some((mid) => (last.byMid[mid]?.received ?? 0) > (previous.byMid[mid]?.received ?? 0));
      if (arrivedNow || !this._heardAt.has(person.id)) this._heardAt.set(person.id, last.at);
      const silentFor = last.at - this._heardAt.get(person.id);
      if (expected > 0 && silentFor >= LOST_AFTER_MS) result.set(person.id, 'lost');
      else result.set(person.id, expected > 0 && weak ? 'weak' : 'good');
    }
    return result;
  }

  /** Verdicts as shown: 'lost' at once, any other change once it held STEADY_POLLS polls. */
  _steady(verdicts) {
    const shown = new Map();
    for (const [id, verdict] of verdicts) {
      const before = this.quality.get(id) ?? 'good';
      const pending = this._pending.get(id);
      const polls = pending?.verdict === verdict ? pending.polls + 1 : 1;
      this._pending.set(id, {verdict, polls});
      shown.set(id, verdict === before || verdict === 'lost' || polls >= STEADY_POLLS ? verdict : before);
    }
    return shown;
  }

  _set(next) {
    const changed = next.size !== this.quality.size || [...next].some(([id, q]) => this.quality.get(id) !== q);
    this.quality = next;
    if (changed) this.dispatchEvent(new Event('change'));
  }
}

/** The counters that matter, by mid, and the selected candidate pair's round trip (s). */
function sample(report, at) {
  const byMid = {};
  let rtt = null;
  for (const stat of report.values()) {
    if (stat.type === 'inbound-rtp' && stat.mid) {
      byMid[stat.mid] = {
        kind: stat.kind, received: stat.packetsReceived ?? 0, lost: stat.packetsLost ?? 0,
        frames: stat.framesDecoded ?? 0, jitter: stat.jitter ?? 0,
      };
    } else if (stat.type === 'candidate-pair' && stat.nominated && stat.state === 'succeeded') {
      rtt = stat.currentRoundTripTime ?? rtt;
    }
  }
  return {at, rtt, byMid};
}
