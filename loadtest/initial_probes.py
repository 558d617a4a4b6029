"""Chrome's bandwidth probes at the start of a call, for the load test's simulcast publisher.

What libwebrtc does (GoogCC ProbeController, BitrateProber, PacingController, RTPSender;
from its source as recalled, not checked against a given revision):

- As soon as the transport is writable, ProbeController asks for two probe clusters at
  3x and 6x the start bitrate (300 kbit/s: 900 kbit/s and 1.8 Mbit/s), each at least
  5 packets and 15 ms of data at its rate. The pacer holds them until the first media
  packet (it sends no padding before media, and the prober starts on a packet of at
  least 200 bytes), so they go out right after the call's first frame starts, one after
  the other.
- A cluster is paced at its rate. With media queued, the media packets are its bytes;
  otherwise the pacer asks for padding: on the RTX SSRC (RTX payload type, RTX sequence
  numbers shared with retransmissions, the media stream's last RTP timestamp, no marker),
  with the bandwidth-estimation extensions (abs-send-time, set at send) and MID /
  repaired-rtp-stream-id as the stream's other RTX packets carry them. Padding-only
  packets carry at most 224 bytes of padding; with RTX "redundant payloads" (Chrome's
  default) it first resends packets from the history as padding instead.
- "Further" probes: while an estimate arrives within 1 s of the last cluster and is over
  70 % of that cluster's rate, another cluster at 2x the estimate follows, capped at twice
  the encoder's maximum allocated bitrate (which ends the series).

What this module models, and the choices made (`InitialProber` decides, `send_cluster` paces):

- The clusters start after the first frame has been sent (the moment libwebrtc's prober
  can start), each in the gap after a frame tick, FRAME_GAP_S after that frame's packets:
  one per frame interval (30 fps: 33 ms), 3x first, then 6x. This publisher has no pacer
  (a frame's packets go out at once), so a cluster run into a frame's packets would carry
  that frame's bytes in no time; Chrome paces them at the cluster's rate instead. Padding
  alone between two frames puts the cluster's rate on the wire as Chrome's mixed cluster
  does, and the gaps let a receiver that splits bursts by send-time gaps (ours:
  media/uplink_probes.py, a gap over 5 ms) time each cluster on its own, as a
  transport-cc receiver does by the cluster ids.
- Padding-only packets, 224 bytes of padding each (the padding bit, the last byte the
  padding length), on the RTX SSRC of the layer that sent last in the frame tick (the
  highest one sent: libwebrtc's PacketRouter pads on the module that sent media last),
  not RTX payload padding: both count alike where a receiver times the burst (payload +
  padding bytes), and padding-only packets reach no jitter buffer. Without RTX
  negotiated, the padding goes on the media SSRC with the media payload type and
  sequence numbers, as libwebrtc does.
- The rate is paced over payload + padding bytes (libwebrtc's pacer without its
  include-overhead setting), in steps of the event loop: each step sends what is due
  since the cluster began, then sleeps until the next packet is due (asyncio: ~1 ms).
  A cluster ends once it has MIN_PROBE_PACKETS packets and PROBE_DURATION_S of data at
  its rate; at 1.8 Mbit/s that is 16 packets over ~15 ms. An event loop stalled longer
  than the receiver's gap (5 ms) splits a cluster there; `ClusterSent` records the rate
  each cluster really went out at.
- Further probes are modelled (`further=True`), on each REMB's target, capped at twice
  the sum of the layers' rates. Not modelled: allocation probes (when the encoder's
  maximum changes), periodic ALR probes, probes after a network route change.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Optional

INITIAL_SCALES = (3.0, 6.0)  # ProbeController first/second_exponential_probe_scale x the start bitrate
FURTHER_SCALE = 2.0  # further_exponential_probe_scale
FURTHER_THRESHOLD = 0.7  # further_probe_threshold: an estimate over this share of the last probe probes on
WAIT_FOR_RESULT_S = 1.0  # kMaxWaitingTimeForProbingResult
EARLY_S = 2.0  # estimates this soon after the first frame are logged in the counters
MAX_PROBE_SHARE = 2.0  # probes go up to this x the maximum allocated bitrate
PROBE_DURATION_S = 0.015  # min_probe_duration: a cluster carries at least this long at its rate...
MIN_PROBE_PACKETS = 5  # ...and at least this many packets
PADDING_BYTES = 224  # kMaxPaddingLength: a padding-only packet's padding, its length byte included
FRAME_GAP_S = 0.006  # a cluster starts this long after a frame tick's packets (see the docstring)


@dataclass(frozen=True)
class ClusterSent:
    bitrate: float  # the cluster's target, bit/s
    packets: int
    bytes: int  # payload + padding bytes
    span_s: float  # first packet sent -> last packet sent
    first_bytes: int = 0  # the first packet's
    further: bool = False

    @property
    def bps(self) -> float:
        """The rate it was sent at, as a receiver times it: the bytes after the first packet over the span."""
        return (self.bytes - self.first_bytes) * 8 / self.span_s if self.span_s > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        return {"target_kbps": round(self.bitrate / 1000), "sent_kbps": round(self.bps / 1000),
                "packets": self.packets, "bytes": self.bytes, "span_ms": round(self.span_s * 1000, 1),
                "further": self.further}


class InitialProber:
    """Which probe clusters a Chrome publisher sends, and when (see the module docstring)."""

    def __init__(self, start_bitrate: float, max_bitrate: float, *, enabled: bool = True,
                 further: bool = True) -> None:
        self.start_bitrate = start_bitrate
        self.max_probe_bitrate = max_bitrate * MAX_PROBE_SHARE
        self.enabled = enabled
        self.further = further
        self.started = False
        self.started_at: Optional[float] = None
        self.early_estimates: list[tuple[float, float]] = []  # (s after the first frame, bit/s)
        self._pending: deque[tuple[float, bool]] = deque()  # (bitrate, further) not yet sent
        self._probe_further_above: Optional[float] = None  # an estimate above this probes on
        self._last_sent_at: Optional[float] = None
        self.sent: list[ClusterSent] = []

    def start(self, now: float) -> None:
        """The first frame went out: the initial clusters may follow."""
        if self.started_at is None:
            self.started_at = now
        if self.started or not self.enabled:
            return
        self.started = True
        self._queue([scale * self.start_bitrate for scale in INITIAL_SCALES], is_further=False)

    def _queue(self, bitrates: list[float], is_further: bool) -> None:
        """ProbeController::InitiateProbing: each capped (a capped one ends the series)."""
        probe_further = self.further
        for bitrate in bitrates:
            if bitrate >= self.max_probe_bitrate:
                bitrate, probe_further = self.max_probe_bitrate, False
            self._pending.append((bitrate, is_further))
        self._probe_further_above = bitrates[-1] * FURTHER_THRESHOLD if probe_further else None

    def on_estimate(self, bitrate: float, now: float) -> None:
        """The send-side target after a REMB: over 70 % of the last probe, within 1 s of it, probe on at 2x."""
        if self.started_at is not None and now - self.started_at <= EARLY_S:
            self.early_estimates.append((now - self.started_at, bitrate))
        if self._probe_further_above is None or self._pending or self._last_sent_at is None:
            return
        if now - self._last_sent_at > WAIT_FOR_RESULT_S:
            self._probe_further_above = None  # ProbeController: probing complete
        elif bitrate > self._probe_further_above:
            self._queue([FURTHER_SCALE * bitrate], is_further=True)

    def next_cluster(self) -> Optional[tuple[float, bool]]:
        """The cluster to send in this frame gap (bitrate, further), if any."""
        return self._pending.popleft() if self._pending else None

    def record(self, cluster: ClusterSent, now: float) -> None:
        self.sent.append(cluster)
        self._last_sent_at = now

    def counters(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "further_enabled": self.further, "clusters": len(self.sent),
                "further_clusters": sum(c.further for c in self.sent),
                "packets": sum(c.packets for c in self.sent), "bytes": sum(c.bytes for c in self.sent),
                "sent": [c.summary() for c in self.sent],
                "early_targets": [{"at_ms": round(at * 1000), "kbps": round(bitrate / 1000)}
                                  for at, bitrate in self.early_estimates]}


async def send_cluster(bitrate: float, send_padding: Callable[[], Awaitable[int]], *, further: bool = False,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> ClusterSent:
    """Sends one cluster at `bitrate`: `send_padding()` sends one padding packet now and returns
    its payload + padding bytes. Paced against the cluster's start, so a late wake-up catches up."""
    min_bytes = bitrate * PROBE_DURATION_S / 8
    start = clock()
    first = last = start
    sent = packets = first_bytes = 0

    def unfinished() -> bool:
        return packets < MIN_PROBE_PACKETS or sent < min_bytes

    while unfinished():
        now = clock()
        while sent * 8 <= bitrate * (now - start) and unfinished():  # what is due by now
            size = await send_padding()
            last = clock()
            if not packets:
                first, first_bytes = last, size
            sent += size
            packets += 1
        if unfinished():
            await sleep(max(0.0, start + sent * 8 / bitrate - clock()))  # until the next packet is due
    return ClusterSent(bitrate=bitrate, packets=packets, bytes=sent, span_s=last - first, first_bytes=first_bytes,
                       further=further)
