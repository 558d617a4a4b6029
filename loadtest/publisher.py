"""A publisher that replays a pre-encoded clip, logs when each clip frame was sent, and honours PLI.

Like loadtest.preencoded.PreEncodedTrack, recv() returns av.Packet objects paced
in real time, which aiortc's RTCRtpSender packetizes without encoding. On top:

- `sends`: (clip index, monotonic time) of every frame handed to the sender,
  the "capture stamp" receivers' latencies are measured from. A clip frame is
  sent once per loop of the clip (its keyframe variant counts as that frame),
  so a (clip index, receive time) pair names one send as long as latency stays
  below the clip's length (metrics.REUSE_HORIZON_S is the bound trusted);
- keyframe requests: a browser answers PLI/FIR with a keyframe. aiortc's sender
  ignores PLI for pre-encoded packets, so install_keyframe_hook() passes it to
  the track, which sends the keyframe variant of its next frame (clips.py)
  when `keyframes` were given, and then carries on with the regular clip.
- bandwidth: a browser's encoder follows its congestion controller, which takes
  the smaller of the receiver's delay-based estimate (REMB) and a loss-based one
  (GoogCC: x (1 - loss / 2) above 10 % loss, then +8 % per report under 2 %),
  starting low and probing one rung up when the estimate shows headroom, backing
  off from a rung that failed. With `ladder` (the same clip encoded at lower bitrates and sizes,
  clips.ladder_specs), install_bandwidth_hook() passes REMB and receiver reports to
  the track, which moves to the highest rung at most TARGET_SHARE of that target;
  a switch starts on a keyframe of the new rung (its keyframe variant, or else
  its next regular keyframe), as an encoder's resolution/bitrate change does.
- retransmissions: libwebrtc resends a packet at most once per RTT however many
  NACKs name it (RtpPacketHistory: "already resent within too short time
  window"); aiortc resends on every NACK, which would make NACK copies and
  re-NACKs look better than they are with a browser. install_retransmission_guard()
  applies libwebrtc's rule (no limit until an RTT is measured, as there).
- RED: when the answer negotiated red first (loadtest.red_audio.send_red calls
  use_red), an audio track returns each packet as an RFC 2198 payload carrying
  the current Opus packet and the previous one sent, as Chrome does
  (redundancy distance 1); `sends` still logs the current clip index only.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass
from typing import Optional, Protocol, cast

import av
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from loadtest.preencoded import EncodedClip
from media.red import build_red

# Aim below the estimate, as congestion controllers do, so queues can drain.
TARGET_SHARE = 0.85
# The estimate under this share of the current rate means the rung is too much.
OVERUSE_SHARE = 0.95
PROBE_GRACE_S = 3.0
# After a rung proved too much, wait this long before trying it again (doubling, capped).
PROBE_BACKOFF_S = 5.0
MAX_PROBE_BACKOFF_S = 40.0


class _AdaptiveTrack(Protocol):
    """A track that follows the bandwidth estimate (StampedClipTrack)."""

    def set_target_bitrate(self, bitrate: int) -> None: ...
    def on_loss_report(self, fraction_lost: float) -> None: ...


@dataclass
class Rung:
    clip: EncodedClip
    keyframes: Optional[EncodedClip]
    bitrate: float  # bit/s the clip really averages


class StampedClipTrack(MediaStreamTrack):
    def __init__(self, clip: EncodedClip, start_index: int = 0, keyframes: Optional[EncodedClip] = None,
                 ladder: Optional[list[tuple[EncodedClip, Optional[EncodedClip]]]] = None) -> None:
        super().__init__()
        # rung 0 is the clip itself; lower rungs only when the publisher adapts
        self._rungs = [Rung(clip, keyframes, clip.bitrate)] + [Rung(c, k, c.bitrate) for c, k in (ladder or [])]
        # an adaptive publisher starts on its lowest rung and climbs as the estimate allows,
        # as a browser's congestion control starts low (Chrome: 300 kbit/s) and ramps up
        self._rung = self._wanted_rung = len(self._rungs) - 1
        self.rung_switches = 0
        self.remb_bitrate: Optional[int] = None
        self._loss_based = float("inf")
        self._retry_at: dict[int, float] = {}  # rung -> when it may be probed again after failing
        self._switched_at = float("-inf")
        self._peak = 0.0  # highest estimate since the last switch
        self._backoff_s: dict[int, float] = {}
        self.kind = clip.kind
        self._clip = self._rungs[self._rung].clip
        self._keyframes = self._rungs[self._rung].keyframes
        n = len(clip.packets)
        if keyframes is not None and len(keyframes.packets) != n:
            raise ValueError("keyframe variants must match the clip frame for frame")
        index = start_index % n
        while index > 0 and not clip.keyframes[index]:
            index -= 1  # start decodable
        self._index = index
        self._step = clip.duration // n  # pts units per packet: one video frame or one 20 ms Opus packet
        self._position = 0  # packets sent: the timeline
        self._start: Optional[float] = None
        self._keyframe_wanted = False
        self.sends: list[tuple[int, float]] = []
        self.keyframe_requests = 0
        self.keyframes_on_request = 0
        self.max_late_s = 0.0
        self._red_opus_pt: Optional[int] = None  # set: wrap audio packets in RED with this primary type
        self._previous: Optional[tuple[int, bytes]] = None  # (pts, payload) of the packet sent last

    def use_red(self, opus_payload_type: int) -> None:
        """Send RED from now on: each packet also carries the previous one (audio only)."""
        if self.kind == "audio":
            self._red_opus_pt = opus_payload_type

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._keyframe_wanted = self._keyframes is not None

    def set_target_bitrate(self, bitrate: int) -> None:
        """The receiver's delay-based estimate (REMB)."""
        self.remb_bitrate = bitrate
        self._choose_rung()

    def on_loss_report(self, fraction_lost: float) -> None:
        """A receiver report's loss fraction: GoogCC's loss-based limit (a cut, then +8 % per clean report)."""
        if fraction_lost > 0.10:
            self._loss_based = self._rungs[self._rung].bitrate * (1 - fraction_lost / 2)
        elif fraction_lost < 0.02:
            self._loss_based *= 1.08
        self._choose_rung()

    def _choose_rung(self) -> None:
        now = time.monotonic()
        target = min(self._loss_based, self.remb_bitrate or 0)
        current = self._rung
        rate = self._rungs[current].bitrate
        self._peak = max(self._peak, target)
        # Right after a step up the estimate still reflects the old rate and climbs for a
        # while; only a drop from its peak (the estimator's over-use cut) means too much then.
        settled = now - self._switched_at > PROBE_GRACE_S or target < self._peak * 0.9
        if target < rate * OVERUSE_SHARE and settled and current < len(self._rungs) - 1:
            # the estimate fell below what is sent: step down to what fits, and wait
            # longer before trying this rung again
            fitting = [i for i, r in enumerate(self._rungs) if r.bitrate <= target * TARGET_SHARE]
            backoff = self._backoff_s.get(current, PROBE_BACKOFF_S)
            self._retry_at[current] = now + backoff
            self._backoff_s[current] = min(backoff * 2, MAX_PROBE_BACKOFF_S)
            self._wanted_rung = fitting[0] if fitting else len(self._rungs) - 1
        elif current > 0 and target * TARGET_SHARE >= rate and now >= self._retry_at.get(current - 1, 0.0):
            # headroom above the current rate: probe the next rung up (a browser probes with
            # padding; the estimate here cannot exceed ~1.5x what is sent, so it must try)
            self._wanted_rung = current - 1

    @property
    def rung(self) -> int:
        return self._rung

    @property
    def time_base(self) -> fractions.Fraction:
        return self._clip.time_base

    @property
    def frame_count(self) -> int:
        return len(self._clip.packets)

    async def _pace(self) -> tuple[int, float]:
        """Wait until the next packet is due: its pts, and the time it goes out."""
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = self._position * self._step
        due = self._start + float(pts * self._clip.time_base)
        if due > now:
            await asyncio.sleep(due - now)
            now = time.monotonic()
        else:
            self.max_late_s = max(self.max_late_s, now - due)
        return pts, now

    def _advance(self, index: int, now: float) -> None:
        self.sends.append((index, now))
        self._index = (index + 1) % len(self._clip.packets)
        self._position += 1

    async def next_frame(self) -> tuple[int, int, float]:
        """For a sender that sends the frame itself (loadtest.simulcast_sender: every layer's
        encoding of it): the next clip index, its pts and send time, paced and logged as recv() does."""
        if self.readyState != "live":
            raise MediaStreamError
        pts, now = await self._pace()
        index = self._index
        self._advance(index, now)
        return index, pts, now

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        pts, now = await self._pace()
        clip = self._clip
        index = self._index
        if self._wanted_rung != self._rung:
            target = self._rungs[self._wanted_rung]
            if target.keyframes is not None or target.clip.keyframes[index]:
                self._rung = self._wanted_rung  # switch on a keyframe of the new rung
                self._clip, self._keyframes = target.clip, target.keyframes
                clip = self._clip
                self.rung_switches += 1
                self._switched_at, self._peak = time.monotonic(), 0.0
                self._keyframe_wanted = target.keyframes is not None and not target.clip.keyframes[index]
        data = clip.packets[index]
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            if not clip.keyframes[index]:
                assert self._keyframes is not None  # a keyframe is only wanted from a rung with variants
                data = self._keyframes.packets[index]
                self.keyframes_on_request += 1
        if self.kind == "audio":
            current = data
            if self._red_opus_pt is not None:
                previous = [(pts - self._previous[0], self._previous[1])] if self._previous is not None else []
                data = build_red(self._red_opus_pt, current, previous)
            self._previous = (pts, current)
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = clip.time_base
        self._advance(index, now)
        return packet

    def counters(self) -> dict:
        out: dict[str, Optional[float]] = {
            "sent": len(self.sends), "keyframe_requests": self.keyframe_requests,
            "keyframes_on_request": self.keyframes_on_request, "max_late_ms": round(self.max_late_s * 1000, 1)}
        if self.kind == "audio":
            out["red"] = self._red_opus_pt is not None
        if len(self._rungs) > 1:
            out |= {"rung": self._rung, "rung_kbps": round(self._rungs[self._rung].bitrate / 1000),
                    "rung_switches": self.rung_switches,
                    "remb_kbps": None if self.remb_bitrate is None else round(self.remb_bitrate / 1000)}
        return out


def install_keyframe_hook() -> None:
    """In this process, aiortc senders pass PLI/FIR on to tracks that can act on them."""
    if getattr(RTCRtpSender._send_keyframe, "_loadtest_hook", False):
        return
    original = RTCRtpSender._send_keyframe

    def _send_keyframe(self: RTCRtpSender) -> None:
        original(self)
        track = self.track
        if track is not None and hasattr(track, "request_keyframe"):
            track.request_keyframe()

    setattr(_send_keyframe, "_loadtest_hook", True)  # marks the patch as installed (checked above)
    RTCRtpSender._send_keyframe = _send_keyframe  # type: ignore[method-assign]  # deliberate patch of aiortc


def install_bandwidth_hook() -> None:
    """In this process, aiortc senders pass REMB and receiver-report loss to tracks that adapt."""
    from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket, unpack_remb_fci

    if getattr(RTCRtpSender._handle_rtcp_packet, "_loadtest_hook", False):
        return
    original = RTCRtpSender._handle_rtcp_packet

    async def _handle_rtcp_packet(self: RTCRtpSender, packet) -> None:
        await original(self, packet)
        track = self.track
        if track is None or not hasattr(track, "set_target_bitrate"):
            return
        adaptive = cast(_AdaptiveTrack, track)  # one that takes the estimate takes loss reports too
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._ssrc in ssrcs:
                adaptive.set_target_bitrate(bitrate)
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self._ssrc:
                    adaptive.on_loss_report(report.fraction_lost / 256)

    setattr(_handle_rtcp_packet, "_loadtest_hook", True)  # marks the patch as installed (checked above)
    RTCRtpSender._handle_rtcp_packet = _handle_rtcp_packet  # type: ignore[method-assign]  # deliberate patch


def leave_rtp_loop(sender: RTCRtpSender, exited: asyncio.Event) -> None:
    """How an RTP loop put in place of aiortc's ends, as aiortc's own does: the track stopped
    and dropped, then `exited` (the sender's private event its stop() waits on) set."""
    track = sender.track
    if track is not None:
        track.stop()
        sender.replaceTrack(None)
    exited.set()


class ResendGuard:
    """libwebrtc's rule: a packet already resent is not resent again within one RTT."""

    def __init__(self) -> None:
        self._resent: dict[int, float] = {}
        self.suppressed = 0

    def allow(self, sequence_number: int, now: float, rtt_s: Optional[float]) -> bool:
        last = self._resent.get(sequence_number)
        if rtt_s is not None and last is not None and now - last < rtt_s:
            self.suppressed += 1
            return False
        if len(self._resent) > 4096:  # forget packets long past any retransmission
            self._resent = {s: t for s, t in self._resent.items() if now - t <= 2.0}
        self._resent[sequence_number] = now
        return True


def install_retransmission_guard() -> None:
    """In this process, an aiortc sender resends a packet at most once per measured RTT, like libwebrtc."""
    if getattr(RTCRtpSender._retransmit, "_loadtest_hook", False):
        return
    original = RTCRtpSender._retransmit

    async def _retransmit(self: RTCRtpSender, sequence_number: int) -> None:
        guard = self.__dict__.setdefault("_loadtest_resend_guard", ResendGuard())
        rtt = self._RTCRtpSender__rtt  # type: ignore[attr-defined]  # aiortc's private RTT estimate
        if guard.allow(sequence_number, time.monotonic(), rtt):
            await original(self, sequence_number)

    setattr(_retransmit, "_loadtest_hook", True)  # marks the patch as installed (checked above)
    RTCRtpSender._retransmit = _retransmit  # type: ignore[method-assign]  # deliberate patch of aiortc
