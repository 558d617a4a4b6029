/**
 * How long the browser holds remote video before showing it, while the network is bad.
 *
 * A browser's own playout target follows the jitter of frames that arrived without a
 * retransmission, plus one RTT once NACKs are common. At high loss nearly every frame
 * waits for a retransmission round or more, so frames come out in bursts and the
 * picture keeps stopping. While that happens this raises the receiver's
 * `jitterBufferTarget` (a floor under the playout delay) in steps, up to a cap that keeps
 * glass-to-glass latency inside the clinic's 600 ms; after a calm spell it steps back
 * down, because on a good network latency matters more. The input is the browser's own
 * freeze statistics (inbound-rtp `totalFreezesDuration`, WebRTC's freeze definition).
 *
 * The load test models the same policy (loadtest/playout.py PagePlayoutPolicy): keep the
 * constants and rules of the two in step.
 */

export const PLAYOUT_POLICY = Object.freeze({
  intervalMs: 1000,        // how often getStats is read
  windowMs: 5000,
  raiseFrozenShare: 0.02,  // frozen time in the window that calls for more delay
  raiseHoldMs: 1000,       // let a raise show its effect (freezes seen with it) before the next one
  calmMs: 20000,           // no freeze for this long: one step back down
  stepMs: 150,
  capMs: 450,              // 600 ms glass-to-glass minus path, capture and encode
});

/** The rules, for one remote video: fed one getStats reading at a time. */
export class PlayoutPolicy {
  constructor() {
    this.targetMs = 0;  // 0: the browser's own target
    this._frozen = [];  // [reported at, frozen ms]
    this._changedAt = -Infinity;
    this._lastFrozenAt = -Infinity;
  }

  /** `frozenMs`: freezes that ended since the last reading. Returns the target (ms, 0 = none). */
  update(nowMs, frozenMs) {
    const p = PLAYOUT_POLICY;
    if (frozenMs > 0) {
      this._frozen.push([nowMs, frozenMs]);
      this._lastFrozenAt = nowMs;
    }
    this._frozen = this._frozen.filter(([at]) => nowMs - at <= p.windowMs);
    const frozen = this._frozen.reduce((sum, [, ms]) => sum + ms, 0);
    if (frozen >= p.raiseFrozenShare * p.windowMs && this.targetMs < p.capMs
        && nowMs - this._changedAt >= p.raiseHoldMs) {
      this.targetMs = Math.min(p.capMs, this.targetMs + p.stepMs);
      this._changedAt = nowMs;
      this._frozen = [];  // the next raise needs freezes seen with this floor
    } else if (this.targetMs > 0 && nowMs - this._lastFrozenAt >= p.calmMs
               && nowMs - this._changedAt >= p.calmMs) {
      this.targetMs = Math.max(0, this.targetMs - p.stepMs);
      this._changedAt = nowMs;
    }
    return this.targetMs;
  }
}

/** Runs the policy for every remote video of a peer connection until stop(). */
export class PlayoutController {
  constructor(pc) {
    this.pc = pc;
    this._byMid = new Map();  // mid -> {policy, frozenS: totalFreezesDuration last read}
    this._busy = false;
    this._timer = setInterval(() => this._tick(), PLAYOUT_POLICY.intervalMs);
  }

  stop() {
    clearInterval(this._timer);
  }

  /** Current targets by mid (ms), for diagnostics and tests. */
  targets() {
    return Object.fromEntries([...this._byMid].map(([mid, s]) => [mid, s.policy.targetMs]));
  }

  async _tick() {
    if (this._busy || this.pc.connectionState === 'closed') return;
    this._busy = true;
    try {
      const stats = await this.pc.getStats();
      const now = performance.now();
      for (const report of stats.values()) {
        if (report.type !== 'inbound-rtp' || report.kind !== 'video' || !report.mid) continue;
        const total = report.totalFreezesDuration ?? 0;
        let state = this._byMid.get(report.mid);
        if (!state) {
          state = {policy: new PlayoutPolicy(), frozenS: total};
          this._byMid.set(report.mid, state);
        }
        const before = state.policy.targetMs;
        // a receiver reused for another participant starts its counters again
        const frozenMs = Math.max(0, total - state.frozenS) * 1000;
        state.frozenS = total;
        const target = state.policy.update(now, frozenMs);
        if (target !== before) this._apply(report.mid, target);
      }
    } catch (err) {
      console.warn('playout policy: getStats failed', err);
    } finally {
      this._busy = false;
    }
  }

  _apply(mid, targetMs) {
    const transceiver = this.pc.getTransceivers().find((t) => t.mid === mid);
    const receiver = transceiver?.receiver;
    if (!receiver || !('jitterBufferTarget' in receiver)) return;  // older browsers: their own target
    receiver.jitterBufferTarget = targetMs > 0 ? targetMs : null;
  }
}
