"""A load-test publisher's camera sent as simulcast, the way Chrome sends the layers an answer agreed to.

For each layer (RID) Chrome runs an RTP stream of its own: its own SSRC and RTX SSRC
(announced in no SDP), every media packet carrying the rtp-stream-id header extension
with the RID (Chrome stops once the receiver acknowledges; sending it always is allowed)
and the MID, each retransmission on the RTX SSRC (RFC 4588: original sequence number +
payload) carrying repaired-rtp-stream-id. PLI and NACK name a layer's SSRC; receiver
reports come per layer; REMB is one estimate for all. Sender reports go out per SSRC.

aiortc's RTCRtpSender sends one SSRC, so `SimulcastSender` takes over one sender's RTP
loop, RTCP loop and RTCP handling (on the instance, as loadtest.video_fec_sender does),
and registers each layer's SSRCs with the DTLS transport's router so the RTCP that names
them comes here. The layers are encodings of the clip (loadtest.simulcast_layers): every
frame tick (the track's, loadtest.publisher.StampedClipTrack.next_frame) sends that clip
frame of every layer being sent, each packetized by its own aiortc packetizer (its own
VP8 picture IDs) under its own RTP timestamp offset. Which layers are sent follows
loadtest.simulcast_allocation (lowest first); a layer that starts again starts on a
keyframe (its keyframe variant, else the clip's next keyframe), as does a PLI's answer.
Retransmissions follow libwebrtc's history and once-per-RTT rule (ResendGuard).

At the start, after its first frame, the sender sends Chrome's initial bandwidth probes
(loadtest.initial_probes: clusters at 3x and 6x the start bitrate, then "further" ones
while the estimate keeps up) as padding-only packets on the RTX SSRC of the layer sent
last, between frame ticks. `LOADTEST_PUBLISHER_PROBES` (read when a sender is made;
child processes inherit it) sets them: `on` (default), `initial` (no further probes),
`off` (none: the publisher starts at 300 kbit/s and climbs with the REMB alone).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional, Protocol, cast

import av
from aiortc import RTCRtpSender, clock
from aiortc.codecs import get_encoder, is_rtx
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpsender import RTT_ALPHA, random_sequence_number
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
    wrap_rtx,
)
from aiortc.utils import random32, uint16_add, uint32_add

from loadtest.initial_probes import FRAME_GAP_S, PADDING_BYTES, InitialProber, send_cluster
from loadtest.publisher import ResendGuard, StampedClipTrack, leave_rtp_loop
from loadtest.simulcast_allocation import LayerAllocator
from loadtest.simulcast_layers import LayerClip
from loadtest.simulcast_sdp import REPAIRED_RID_URI, RID_URI, OfferedSimulcast
from loadtest.video_fec_sender import HISTORY_MAX_PACKETS, HISTORY_MIN_S, HISTORY_RTT_FACTOR

logger = logging.getLogger(__name__)

LOSS_UPDATE_S = 1.0  # receiver reports of every layer are pooled into one loss figure this often
PROBES_ENV = "LOADTEST_PUBLISHER_PROBES"
PROBE_MODES = ("on", "initial", "off")


def probe_mode(mode: Optional[str] = None) -> str:
    """`mode`, else the environment's, else "on"; see the module docstring."""
    mode = (mode if mode is not None else os.environ.get(PROBES_ENV) or "on").strip().lower()
    if mode not in PROBE_MODES:
        raise ValueError(f"{PROBES_ENV}={mode!r}: expected one of {', '.join(PROBE_MODES)}")
    return mode


def abs_send_time_now() -> int:
    """abs-send-time (6.18 fixed-point seconds) of the NTP time now."""
    return (clock.current_ntp_time() >> 14) & 0x00FFFFFF


@dataclass(frozen=True)
class SimulcastPlan:
    """What the answer agreed to send: RIDs highest first, each with its encoding."""

    offered: OfferedSimulcast
    rids: tuple[str, ...]
    layers: tuple[LayerClip, ...]
    notes: tuple[str, ...] = ()


class LayerStream:
    """One layer's RTP stream: SSRCs, sequence numbers, history, and what its next frame must be."""

    def __init__(self, rid: str, layer: LayerClip, encoder: Encoder, ssrc: int, rtx_ssrc: int) -> None:
        self.rid, self.layer, self.encoder = rid, layer, encoder
        self.ssrc, self.rtx_ssrc = ssrc, rtx_ssrc
        self.timestamp_origin = random32()  # each libwebrtc RTP stream has its own offset
        self.seq = random_sequence_number()
        self.rtx_seq = random_sequence_number()
        self.history: OrderedDict[int, tuple[RtpPacket, float]] = OrderedDict()
        self.guard = ResendGuard()
        self.active = True
        self.needs_start = True  # the next frame sent must be a keyframe
        self.keyframe_wanted = False  # a PLI asked for one
        # sender-report state (aiortc's: the last packet's NTP and RTP times)
        self.ntp_timestamp = self.rtp_timestamp = self.octet_count = self.packet_count = 0
        self.lsr: Optional[int] = None
        self.lsr_time: Optional[float] = None
        self.rtt_s: Optional[float] = None
        self.fraction_lost: Optional[float] = None
        self.frames = self.keyframe_requests = self.keyframes_on_request = self.waited_for_keyframe = 0
        self.retransmissions = self.nacks_unanswered = self.pauses = self.resumes = 0
        self.padding_packets = 0  # probe padding sent for this layer (loadtest.initial_probes)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self.keyframe_wanted = self.layer.keyframes is not None  # no variants: as the single stream, ignored

    def set_active(self, active: bool) -> None:
        if active == self.active:
            return
        self.active = active
        if active:
            self.resumes += 1
            self.needs_start = True
        else:
            self.pauses += 1

    def frame_data(self, index: int) -> Optional[bytes]:
        """This layer's encoding of clip frame `index` to send now; None: not sent (off, or awaiting a keyframe)."""
        if not self.active:
            return None
        clip, variants = self.layer.clip, self.layer.keyframes
        data = clip.packets[index]
        if (self.needs_start or self.keyframe_wanted) and not clip.keyframes[index]:
            if variants is not None:
                data = variants.packets[index]
                if self.keyframe_wanted:
                    self.keyframes_on_request += 1
            elif self.needs_start:
                self.waited_for_keyframe += 1
                return None  # starts at the clip's next keyframe
        self.needs_start = self.keyframe_wanted = False
        self.frames += 1
        return data

    def remember(self, packet: RtpPacket, now: float) -> None:
        """RtpPacketHistory: packets kept max(1 s, 3 x RTT), at most 600 (loadtest.video_fec_sender)."""
        self.history.pop(packet.sequence_number, None)
        self.history[packet.sequence_number] = (packet, now)
        keep_s = max(HISTORY_MIN_S, HISTORY_RTT_FACTOR * (self.rtt_s or 0.0))
        while self.history:
            oldest, (_, sent_at) = next(iter(self.history.items()))
            if len(self.history) <= HISTORY_MAX_PACKETS and now - sent_at <= keep_s:
                break
            del self.history[oldest]

    def on_report(self, report: RtcpReceiverInfo) -> None:
        """A receiver report block for this layer: its loss, and the RTT as aiortc measures it."""
        self.fraction_lost = report.fraction_lost / 256
        if self.lsr is not None and self.lsr_time is not None and report.lsr == self.lsr and report.dlsr:
            rtt = time.time() - self.lsr_time - report.dlsr / 65536
            self.rtt_s = rtt if self.rtt_s is None else RTT_ALPHA * self.rtt_s + (1 - RTT_ALPHA) * rtt

    def counters(self) -> dict[str, Any]:
        return {"rid": self.rid, "ssrc": self.ssrc, "rtx_ssrc": self.rtx_ssrc, "width": self.layer.width,
                "height": self.layer.height, "kbps": round(self.layer.bitrate / 1000), "active": self.active,
                "frames": self.frames, "packets": self.packet_count, "pauses": self.pauses, "resumes": self.resumes,
                "keyframe_requests": self.keyframe_requests, "keyframes_on_request": self.keyframes_on_request,
                "waited_for_keyframe": self.waited_for_keyframe, "retransmissions": self.retransmissions,
                "padding_packets": self.padding_packets,
                "resends_suppressed": self.guard.suppressed, "nacks_unanswered": self.nacks_unanswered,
                "rtt_ms": None if self.rtt_s is None else round(self.rtt_s * 1000, 1),
                "fraction_lost": self.fraction_lost}


class _SenderEvents(Protocol):
    """aiortc 1.16.0 RTCRtpSender's private events that its stop() waits on, and the loops and
    handler `install()` replaces on the instance (tests/loadtest/test_simulcast_sender.py pins them)."""

    _RTCRtpSender__rtp_started: asyncio.Event
    _RTCRtpSender__rtp_exited: asyncio.Event
    _RTCRtpSender__rtcp_started: asyncio.Event
    _RTCRtpSender__rtcp_exited: asyncio.Event
    _run_rtp: Callable[[RTCRtpCodecParameters], Awaitable[None]]
    _run_rtcp: Callable[[], Awaitable[None]]
    _handle_rtcp_packet: Callable[[Any], Awaitable[None]]


def extensions_map(parameters: RTCRtpParameters, offered: OfferedSimulcast) -> HeaderExtensionsMap:
    """aiortc's negotiated extensions (mid, abs-send-time) plus the two RID ones under the offer's ids."""
    extensions = list(parameters.headerExtensions)
    extensions.append(RTCRtpHeaderExtensionParameters(id=offered.rid_extension, uri=RID_URI))
    if offered.repaired_rid_extension is not None:
        extensions.append(RTCRtpHeaderExtensionParameters(id=offered.repaired_rid_extension, uri=REPAIRED_RID_URI))
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=extensions))
    return ext_map


class SimulcastSender:
    """Sends one aiortc RTCRtpSender's track as the layers of `plan` (see the module docstring)."""

    def __init__(self, sender: RTCRtpSender, plan: SimulcastPlan, parameters: RTCRtpSendParameters,
                 probes: Optional[str] = None) -> None:
        self.sender = sender
        self._events = cast(_SenderEvents, sender)
        self.plan = plan
        codec = parameters.codecs[0]
        self.codec = codec
        assert codec.payloadType is not None  # negotiated codecs have one
        self.payload_type: int = codec.payloadType
        self.rtx_payload_type = next((c.payloadType for c in parameters.codecs
                                      if is_rtx(c) and c.parameters.get("apt") == codec.payloadType), None)
        self.mid = parameters.muxId
        self.cname = parameters.rtcp.cname
        self.ext_map = extensions_map(parameters, plan.offered)
        # the sender's own SSRCs for the first layer, fresh ones for the others
        ssrcs = [(sender._ssrc, sender._rtx_ssrc)] + [(random32(), random32()) for _ in plan.rids[1:]]
        self.streams = [LayerStream(rid, layer, get_encoder(codec), ssrc, rtx)
                        for rid, layer, (ssrc, rtx) in zip(plan.rids, plan.layers, ssrcs)]
        self.by_ssrc = {s.ssrc: s for s in self.streams}
        # lowest first, for the allocation
        self.lowest_first = sorted(self.streams, key=lambda s: s.layer.bitrate)
        self.allocator = LayerAllocator([s.layer.bitrate for s in self.lowest_first])
        self._last_loss_update = float("-inf")
        self.remb_bitrate: Optional[int] = None
        mode = probe_mode(probes)
        self.prober = InitialProber(self.allocator.start_bitrate, sum(self.allocator.rates),
                                    enabled=mode != "off", further=mode == "on")
        self._last_sent: Optional[LayerStream] = None  # the layer that sent last: probes pad on its RTX SSRC
        self._apply_allocation()

    def install(self) -> None:
        events, sender = self._events, self.sender
        setattr(sender, "_loadtest_simulcast_sender", self)  # our tag, read by simulcast_sender_of
        events._run_rtp = self._run_rtp
        events._run_rtcp = self._run_rtcp
        events._handle_rtcp_packet = self.handle_rtcp_packet

    # --- RTP ---------------------------------------------------------------------------------------

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        sender, events = self.sender, self._events
        events._RTCRtpSender__rtp_started.set()
        router = sender.transport._rtp_router
        for stream in self.streams:  # RTCP naming a layer's SSRCs comes to this sender
            router.register_sender(sender, stream.ssrc)
            router.register_sender(sender, stream.rtx_ssrc)
        try:
            while True:
                track = sender.track
                if not isinstance(track, StampedClipTrack):
                    await asyncio.sleep(0.02)
                    continue
                index, pts, now = await track.next_frame()
                for stream in self.lowest_first:
                    data = stream.frame_data(index)
                    if data is not None:
                        await self.send_frame(stream, data, pts, track.time_base, now)
                        self._last_sent = stream
                if self._last_sent is not None:
                    self.prober.start(time.monotonic())  # the first frame went out: probing may begin
                    await self.probe_after_frame()
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:  # stop() waits for the exit event below: never leave without it
            logger.exception("simulcast sender failed")
        leave_rtp_loop(sender, events._RTCRtpSender__rtp_exited)

    async def send_frame(self, stream: LayerStream, data: bytes, pts: int, time_base: Any, now: float) -> None:
        packet = av.Packet(data)
        packet.pts, packet.time_base = pts, time_base
        payloads, timestamp = stream.encoder.pack(packet)
        timestamp = uint32_add(stream.timestamp_origin, timestamp)
        for i, payload in enumerate(payloads):
            rtp = RtpPacket(payload_type=self.payload_type, marker=int(i == len(payloads) - 1),
                            sequence_number=stream.seq, timestamp=timestamp, ssrc=stream.ssrc, payload=payload)
            rtp.extensions.abs_send_time = abs_send_time_now()
            rtp.extensions.mid = self.mid
            rtp.extensions.rtp_stream_id = stream.rid
            stream.seq = uint16_add(stream.seq, 1)
            stream.remember(rtp, now)
            await self.sender.transport._send_rtp(rtp.serialize(self.ext_map))
            stream.ntp_timestamp = clock.current_ntp_time()
            stream.rtp_timestamp = timestamp
            stream.octet_count += len(payload)
            stream.packet_count += 1

    async def probe_after_frame(self, *, monotonic: Callable[[], float] = time.monotonic,
                                sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        """The next probe cluster due, if any, in the gap after this frame tick (loadtest.initial_probes)."""
        stream = self._last_sent
        cluster = self.prober.next_cluster()
        if cluster is None or stream is None:
            return
        bitrate, further = cluster
        await sleep(FRAME_GAP_S)

        async def send_padding() -> int:
            packet = self.padding_packet(stream)
            await self.sender.transport._send_rtp(packet.serialize(self.ext_map))
            return len(packet.payload) + packet.padding_size

        sent = await send_cluster(bitrate, send_padding, further=further, clock=monotonic, sleep=sleep)
        self.prober.record(sent, monotonic())

    def padding_packet(self, stream: LayerStream) -> RtpPacket:
        """libwebrtc's padding-only packet: on the RTX SSRC (RTX payload type and sequence numbers,
        the extensions of the stream's other RTX packets), else on the media SSRC; the media's last
        RTP timestamp, no marker, PADDING_BYTES of padding, abs-send-time set now."""
        if self.rtx_payload_type is not None:
            packet = RtpPacket(payload_type=self.rtx_payload_type, sequence_number=stream.rtx_seq,
                               timestamp=stream.rtp_timestamp, ssrc=stream.rtx_ssrc)
            stream.rtx_seq = uint16_add(stream.rtx_seq, 1)
            packet.extensions.repaired_rtp_stream_id = stream.rid
        else:
            packet = RtpPacket(payload_type=self.payload_type, sequence_number=stream.seq,
                               timestamp=stream.rtp_timestamp, ssrc=stream.ssrc)
            stream.seq = uint16_add(stream.seq, 1)
            packet.extensions.rtp_stream_id = stream.rid
        packet.padding_size = PADDING_BYTES
        packet.extensions.mid = self.mid
        packet.extensions.abs_send_time = abs_send_time_now()
        stream.padding_packets += 1
        return packet

    def rtx_packet(self, stream: LayerStream, packet: RtpPacket) -> RtpPacket:
        """`packet` again on the layer's RTX SSRC, named by repaired-rtp-stream-id (RFC 4588)."""
        assert self.rtx_payload_type is not None  # only called where RTX was negotiated
        rtx = wrap_rtx(packet, payload_type=self.rtx_payload_type, sequence_number=stream.rtx_seq,
                       ssrc=stream.rtx_ssrc)
        rtx.extensions = replace(packet.extensions, rtp_stream_id=None, repaired_rtp_stream_id=stream.rid,
                                 abs_send_time=abs_send_time_now())
        stream.rtx_seq = uint16_add(stream.rtx_seq, 1)
        return rtx

    async def retransmit(self, stream: LayerStream, sequence_number: int) -> None:
        packet, _ = stream.history.get(sequence_number, (None, 0.0))
        if packet is None:
            stream.nacks_unanswered += 1
            return
        if not stream.guard.allow(sequence_number, time.monotonic(), stream.rtt_s):
            return
        if self.rtx_payload_type is not None:
            packet = self.rtx_packet(stream, packet)
        # (without RTX, libwebrtc resends in the media stream itself)
        stream.retransmissions += 1
        await self.sender.transport._send_rtp(packet.serialize(self.ext_map))

    # --- RTCP --------------------------------------------------------------------------------------

    async def handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        now = time.monotonic()
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            reported = False
            for report in packet.reports:
                stream = self.by_ssrc.get(report.ssrc)
                if stream is not None:
                    stream.on_report(report)
                    reported = True
            if reported and now - self._last_loss_update >= LOSS_UPDATE_S:
                self._last_loss_update = now
                self.allocator.on_loss(self.pooled_loss(), now)
                self._apply_allocation()
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            stream = self.by_ssrc.get(packet.media_ssrc)
            if stream is not None:
                for seq in packet.lost:
                    await self.retransmit(stream, seq)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            stream = self.by_ssrc.get(packet.media_ssrc)
            if stream is not None:
                stream.request_keyframe()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
            for at in range(0, len(packet.fci) - 7, 8):  # FCI entries: SSRC, sequence number, reserved
                stream = self.by_ssrc.get(int.from_bytes(packet.fci[at:at + 4], "big"))
                if stream is not None:
                    stream.request_keyframe()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if any(ssrc in self.by_ssrc for ssrc in ssrcs):
                self.remb_bitrate = bitrate
                self.allocator.on_remb(bitrate, now)
                self._apply_allocation()
                self.prober.on_estimate(self.allocator.target, now)  # over 70 % of the last probe: probe on

    def pooled_loss(self) -> float:
        """The loss over the layers sent, each layer's reported fraction weighted by its rate (as GoogCC
        counts lost packets over every report block)."""
        reported = [(s.fraction_lost, s.layer.bitrate) for s in self.streams
                    if s.active and s.fraction_lost is not None]
        total = sum(rate for _, rate in reported)
        return sum(loss * rate for loss, rate in reported) / total if total else 0.0

    def _apply_allocation(self) -> None:
        for position, stream in enumerate(self.lowest_first):
            stream.set_active(position < self.allocator.active)

    async def _run_rtcp(self) -> None:
        events = self._events
        events._RTCRtpSender__rtcp_started.set()
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())  # aiortc's (and RFC 3550's) randomised interval
                await self._send_rtcp(self.sender_reports())
        except asyncio.CancelledError:
            pass
        await self._send_rtcp([RtcpByePacket(sources=[s for st in self.streams for s in (st.ssrc, st.rtx_ssrc)])])
        events._RTCRtpSender__rtcp_exited.set()

    def sender_reports(self) -> list[AnyRtcpPacket]:
        """One SR per layer that has sent (its NTP/RTP pair: lip sync; its LSR: the RTT), and SDES."""
        packets: list[AnyRtcpPacket] = []
        now = time.time()
        sent = [s for s in self.streams if s.packet_count]
        for stream in sent:
            packets.append(RtcpSrPacket(ssrc=stream.ssrc, sender_info=RtcpSenderInfo(
                ntp_timestamp=stream.ntp_timestamp, rtp_timestamp=stream.rtp_timestamp,
                packet_count=stream.packet_count & 0xFFFFFFFF, octet_count=stream.octet_count & 0xFFFFFFFF)))
            stream.lsr = (stream.ntp_timestamp >> 16) & 0xFFFFFFFF
            stream.lsr_time = now
        if sent and self.cname is not None:
            packets.append(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=s.ssrc, items=[(1, self.cname.encode())])
                                                  for s in sent]))
        return packets

    async def _send_rtcp(self, packets: Sequence[AnyRtcpPacket]) -> None:
        if not packets:
            return
        try:
            await self.sender.transport._send_rtp(b"".join(bytes(p) for p in packets))
        except ConnectionError:
            pass

    def counters(self) -> dict[str, Any]:
        allocator = self.allocator
        return {"layers": [s.counters() for s in self.streams], "active_layers": allocator.active,
                "allocation_switches": allocator.switches, "probes": allocator.probes,
                "probes_failed": allocator.probes_failed,
                "target_kbps": round(allocator.target / 1000) if allocator.target != float("inf") else None,
                "remb_kbps": None if self.remb_bitrate is None else round(self.remb_bitrate / 1000),
                "initial_probing": self.prober.counters(), "notes": list(self.plan.notes)}


def send_simulcast(sender: RTCRtpSender, plan: SimulcastPlan) -> None:
    """When the sender starts, it sends `plan`'s layers (SimulcastSender) instead of one stream.

    aiortc calls `send` with the negotiated parameters on every negotiation and starts once;
    a sender already started stays as it is.
    """
    if getattr(sender, "_loadtest_simulcast_plan", None) is not None:
        return  # wrapped on an earlier negotiation
    setattr(sender, "_loadtest_simulcast_plan", plan)  # our tag on aiortc's object, read back above
    original = sender.send

    async def send(parameters: RTCRtpSendParameters) -> None:
        started = sender._RTCRtpSender__started  # type: ignore[attr-defined]  # aiortc's private started flag
        if not started and simulcast_sender_of(sender) is None and parameters.codecs:
            SimulcastSender(sender, plan, parameters).install()
        await original(parameters)

    sender.send = send  # type: ignore[method-assign]  # deliberately wraps aiortc's method on this sender


def simulcast_sender_of(sender: RTCRtpSender) -> Optional[SimulcastSender]:
    return getattr(sender, "_loadtest_simulcast_sender", None)
