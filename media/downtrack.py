"""One subscriber's copy of one published track: rewrite, send, answer feedback.

Registered with the subscriber's DTLS transport in place of aiortc's
RTCRtpSender (which would encode, or pack per frame and ignore PLI). Per packet
it rewrites SSRC / sequence number / timestamp / payload type and the header
extensions, keeps the packet for NACKs and hands it to SRTP, through the
subscriber's pacer when its downlink is narrow (media/send_budget.py); video starts
at a keyframe (media/keyframe_gate.py). Sender reports pass the publisher's clock
mapping on (media/sender_reports.py). RTCP from the subscriber is answered here:
NACK from the cache (RTX where negotiated) within the send budget, PLI/FIR
forwarded to the source's coalescing keyframe requester; REMB goes to the downlink
estimate, receiver reports to media/receiver_reports.py (RTT, the downlink's own
loss, delivered bytes). The downlink controller may pause a video down-track and
probe through its RTX SSRC.

It is the sink side of the packet path (media/packet_path.py `PacketSink`): a source
calls `forward` and the rest on it, and it asks its source for keyframes and sender
reports only through `DownTrackSource`. It never registers itself with a source: the
room connects and disconnects the two (`packet_path.connect` / `disconnect`, whose
sink side is `bind` / `unbind`); `attach` / `detach` are those calls, for code that
wires a down-track by hand.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from functools import partial
from typing import Optional

from aiortc.codecs import is_rtx
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
)

from .downlink_fec import DownlinkFec
from .keyframe_gate import KeyframeGate
from .layer_sizes import Size
from .nack_answers import STALE_STRETCH_PACKETS, NackAnswers
from .pacer import AUDIO, RECOVERY, VIDEO
from .packet_cache import PacketCache, SentPacket
from .packet_path import DownTrackSource, LayeredSource, connect, disconnect
from .receiver_reports import RTP_HEADER_BYTES, ReceiverReports
from .recovery_copies import RecoveryCopies
from .redundancy import LossEstimate
from .rewriter import StreamRewriter
from .rtcp_feedback import TransportFeedbackPacket
from .rtcp_io import send_rtcp
from .rtp_clock import abs_send_time_now
from .rtp_writer import RtpWriter
from .sdp_video_fec import PROTECTABLE, video_fec_in_codecs
from .send_budget import PACKET_OVERHEAD_BYTES, SendBudget
from .sender_reports import SenderReports
from .seqnum import seq_add
from .twcc_feedback import parse_fci
from .video_fec import VideoFecSender, red_wrap
from .vp8_munger import Vp8Munger

logger = logging.getLogger(__name__)


# Padding for a bandwidth probe: past the pacer, since it tests what the rate does not yet allow.
PROBE = -1
# The largest padding one packet carries (RFC 3550: the count is one byte).
PADDING_PACKET_BYTES = 255
# Sender reports go out for the RTX stream too while a probe's padding went out this recently.
PROBE_REPORT_S = 2.0


def _codec_key(codec: RTCRtpCodecParameters) -> tuple:
    """Identifies a codec across peer connections (H.264 profiles are not interchangeable)."""
    return (
        codec.mimeType.lower(),
        codec.clockRate,
        str(codec.parameters.get("profile-level-id", "")).lower()[:2],
        str(codec.parameters.get("packetization-mode", "")),
    )


class DownTrack:
    def __init__(self, *, subscriber_id: str, kind: str, ssrc: int, rtx_ssrc: int,
                 downlink_loss: Optional[LossEstimate] = None, budget: Optional[SendBudget] = None) -> None:
        self.subscriber_id = subscriber_id
        self.kind = kind
        self._media_class = AUDIO if kind == "audio" else VIDEO
        self._ssrc = ssrc  # the key aiortc's RTP router files senders under
        self._rtx_ssrc = rtx_ssrc
        self.transport: Optional[RTCDtlsTransport] = None
        self.source: Optional[DownTrackSource] = None
        # what sends it packets now: the source, or the source's layer (simulcast)
        self.feed: Optional[DownTrackSource] = None
        self._layers: Optional[LayeredSource] = None
        self._vp8: Optional[Vp8Munger] = None
        self.layer_switches = 0
        self.view: Optional[Size] = None  # the size the subscriber draws it at (None: not told)
        self._rewriter: Optional[StreamRewriter] = None
        # audio is NACKed too (we negotiate it); 256 Opus packets are ~5 s
        self._cache = PacketCache(STALE_STRETCH_PACKETS if kind == "video" else 256)
        self._out_pt: dict[tuple, int] = {}
        # source payload type -> ours (None: not negotiated); recomputed when the source changes
        self._pt_for_source: dict[int, Optional[int]] = {}
        # source payload type -> whether its packets get RED/FEC (VP8/VP9 with FEC negotiated)
        self._fec_for_source: dict[int, bool] = {}
        # source payload type -> whether it is VP8 (its picture IDs renumbered, from layers)
        self._vp8_for_source: dict[int, bool] = {}
        self._out_rtx_pt: dict[int, int] = {}
        self._rtx_seq = random.randrange(1 << 15)
        # a starting video drops packets until a keyframe, asking for one (media/keyframe_gate.py)
        self._gate = KeyframeGate(video=kind == "video")
        # what its RTCP sender reports say (media/sender_reports.py)
        self._sender_reports = SenderReports(ssrc=ssrc, rtx_ssrc=rtx_ssrc)
        self._sr_task: Optional[asyncio.Task] = None
        self._writer: Optional[RtpWriter] = None
        self._mid: Optional[str] = None
        self.started = False
        self.stopped = False
        # sender statistics (RTCP SR) and counters for operators and tests
        self.packets_sent = 0
        self.octets_sent = 0
        self.retransmitted = 0
        self.nacks_received = 0
        self.plis_received = 0
        self.remb_bitrate: Optional[int] = None
        # First-transmission loss toward this subscriber, shared by its down-tracks (one
        # transport). Measured from video NACKs, not RTCP RR: the copies sent below count
        # as received in an RR and would hide the very loss that made them necessary.
        self.downlink_loss = downlink_loss if downlink_loss is not None else LossEstimate()
        # What the subscriber's downlink carries, shared by its down-tracks (media/send_budget.py).
        self.budget = budget if budget is not None else SendBudget()
        self._pacer = self.budget.pacer
        self._sequencer = self.budget.sequencer
        # counted straight into the budget's meter, as SendBudget.note_media would: per packet
        self._media_meter = self.budget.audio if kind == "audio" else self.budget.video
        self._paused = False  # video withheld for the downlink's sake (media/downlink_control.py)
        self.plis_while_paused = 0
        self.padding_sent = 0
        self.feedback_malformed = 0  # transport-cc feedback that did not parse
        self._padding_at = float("-inf")
        # extra copies of retransmissions, late packets and audio (media/recovery_copies.py)
        self.copies = RecoveryCopies(self.budget, partial(self._send, cls=RECOVERY))
        # which NACKs are answered, and the downlink loss they show (media/nack_answers.py)
        self.nacks = NackAnswers(video=kind == "video", downlink_loss=self.downlink_loss)
        # video RED + ULPFEC, when the subscriber negotiated them (media/downlink_fec.py)
        self._fec: Optional[DownlinkFec] = None
        # RTT, the downlink's own loss and the bytes it delivered, from the subscriber's reports
        self.reports = ReceiverReports(ssrc=ssrc, rtx_ssrc=rtx_ssrc, video=kind == "video", cache=self._cache,
                                       estimate=self.budget.estimate)

    # --- lifecycle (driven by the aiortc bridge and the room) -----------------

    async def start(self, transport: RTCDtlsTransport, parameters: RTCRtpSendParameters) -> None:
        if self.started or self.stopped:
            return
        self.transport = transport
        self._sender_reports.cname = parameters.rtcp.cname
        self._mid = parameters.muxId
        for codec in parameters.codecs:
            assert codec.payloadType is not None  # aiortc numbers every codec it negotiates
            apt = codec.parameters.get("apt")
            if not is_rtx(codec):
                self._out_pt.setdefault(_codec_key(codec), codec.payloadType)
            elif isinstance(apt, int):
                self._out_rtx_pt[apt] = codec.payloadType
        transport._register_rtp_sender(self, parameters)
        self._writer = RtpWriter(parameters.headerExtensions, parameters.muxId)
        if self._writer.transport_cc_id is not None:
            self.budget.sequencer.enable(self._writer.transport_cc_id)
            # the subscriber's feedback names the SSRC it last received, a probe's RTX one among them
            transport._rtp_router.register_sender(self, self._rtx_ssrc)
        self._rewriter = StreamRewriter(clock_rate=parameters.codecs[0].clockRate)
        fec_pts = video_fec_in_codecs(parameters.codecs) if self.kind == "video" else None
        if fec_pts is not None:
            self._fec = DownlinkFec(VideoFecSender(fec_pts), writer=self._writer, ssrc=self._ssrc, budget=self.budget,
                                    reserve=self._rewriter.reserve, send=partial(self._send, cls=RECOVERY))
        self.started = True
        self._sr_task = asyncio.ensure_future(self._run_rtcp())
        if self.feed is not None and self.kind == "video":
            self.feed.request_keyframe()

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.copies.stopped = True
        disconnect(self)  # (stopped: `unbind` keeps the state it ended in)
        if self.transport is not None:
            self.transport._unregister_rtp_sender(self)
        if self._sr_task is not None:
            self._sr_task.cancel()
            await asyncio.gather(self._sr_task, return_exceptions=True)

    # --- wiring: the room connects and disconnects (media/packet_path.py) -------------

    def attach(self, source: DownTrackSource) -> None:
        """Carry this source from its next keyframe on (audio: from its next packet): the same as
        `packet_path.connect(source, self)`, which the room calls; for code that wires a
        down-track by hand (tests, the load-test rig)."""
        connect(source, self)

    def detach(self, source: Optional[DownTrackSource] = None) -> None:
        """Carry nothing (with `source`: only if that is what it carries): the same as
        `packet_path.disconnect(self, source)`."""
        disconnect(self, source)

    def bind(self, source: DownTrackSource) -> None:
        """Its side of `packet_path.connect`: carry `source` from its next keyframe on (audio: from
        its next packet), numbering on from whatever it carried before."""
        self.source = self.feed = source
        self._layers = source if isinstance(source, LayeredSource) else None
        # layers number their VP8 pictures apart: continuous across switches for the receiver
        self._vp8 = Vp8Munger() if self._layers is not None else None
        self._pt_for_source.clear()
        self._fec_for_source.clear()
        self._vp8_for_source.clear()
        if self._rewriter is not None:
            self._rewriter.reset()
        self._gate.reset(time.monotonic())

    def unbind(self) -> None:
        """Its side of `packet_path.disconnect`: carry nothing; whatever comes next starts afresh."""
        self.source = self.feed = self._layers = None
        if self.stopped:
            return  # ended (`stop`): its numbering and pause stay as they were
        if self._rewriter is not None:
            self._rewriter.reset()
        self._paused = False  # a pause was for that source; whoever comes next starts unpaused

    def switch_feed(self, feed: DownTrackSource) -> None:
        """A layered source feeds this down-track from `feed` from now on: carried from its
        next keyframe (the source switches at one), the numbering continuing."""
        if feed is self.feed:
            return
        if self.feed is not None and self.feed is not self.source:
            self.layer_switches += 1
        self.feed = feed  # (a layer of the same source: the same payload types)
        self.source_restarted()

    def source_restarted(self) -> None:
        """The source's stream started over (a new SSRC, numbering anew): carry it on from its
        next keyframe, continuing this down-track's own numbering."""
        if self._rewriter is not None:
            self._rewriter.reset()
        self._gate.reset(time.monotonic())

    # --- pausing for a narrow downlink (driven by media/downlink_control.py) ------

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def active(self) -> bool:
        return self.started and not self.stopped and self.source is not None

    def offered_bps(self, now: float) -> float:
        return 0.0 if self.feed is None else self.feed.offered_bps(now)

    # --- layers (simulcast), chosen by media/downlink_control.py ------------------

    def layer_rates(self, now: float) -> list[float]:
        """What each layer of the source sends, lowest first (one, unlayered); layers above what
        the subscriber's tile needs count as not arriving, so the controller never raises to them."""
        if self._layers is None:
            return [self.offered_bps(now)]
        rates = self._layers.layer_rates(now)
        ceiling = self.layer_ceiling
        return rates[:ceiling + 1] + [0.0] * (len(rates) - ceiling - 1)

    @property
    def layer_ceiling(self) -> int:
        """The best layer the subscriber's tile needs (the top while it has not said). Its source
        moves a down-track above it down (`SimulcastTrack.check_layers`); the controller never
        raises past it."""
        return 0 if self._layers is None else self._layers.layer_for_view(self.view)

    def set_view(self, view: Optional[Size]) -> None:
        """The subscriber draws this video at `view` (device pixels; 0x0: hidden; None: not told)."""
        self.view = view

    @property
    def layer(self) -> int:
        """The layer this down-track should carry (it switches at that layer's next keyframe)."""
        index = None if self._layers is None else self._layers.layer_of(self)
        return 0 if index is None else index

    def select_layer(self, index: int) -> None:
        if self._layers is not None:
            self._layers.select_layer(self, index)

    @property
    def layer_name(self) -> Optional[str]:
        """The RID of the layer it carries now (None: unlayered, or none yet)."""
        if self._layers is None:
            return None
        index = self._layers.feeding(self)
        return None if index is None else self._layers.rids[index]

    def pause(self) -> None:
        """Stop sending this video; the numbering carries on where it stopped when it resumes."""
        if self._paused or self.kind != "video":
            return
        self._paused = True
        if self._rewriter is not None:
            self._rewriter.reset()
        self._gate.reset(time.monotonic())
        # the loss its reports showed was the congestion's: FEC sized for it would come back with it
        self.reports.forget_loss()
        self._update_fec()

    def resume(self) -> None:
        """Send this video again from the source's next keyframe."""
        if not self._paused:
            return
        self._paused = False
        self._gate.reset(time.monotonic())
        if self.feed is not None:
            self.feed.request_keyframe()

    @property
    def can_probe(self) -> bool:
        return self.started and bool(self._out_rtx_pt)

    async def send_padding(self, nbytes: int, now: float) -> int:
        """Padding-only RTX packets, for a bandwidth probe (no media numbering is touched)."""
        writer, rewriter = self._writer, self._rewriter
        if writer is None or rewriter is None or not self._out_rtx_pt or self.stopped:
            return 0
        rtx_pt = next(iter(self._out_rtx_pt.values()))
        sent = 0
        while nbytes - sent >= PADDING_PACKET_BYTES:
            data = writer.write_padding(payload_type=rtx_pt, sequence_number=self._rtx_seq,
                                        timestamp=rewriter.last_timestamp, ssrc=self._rtx_ssrc,
                                        size=PADDING_PACKET_BYTES, abs_send_time=abs_send_time_now())
            self._rtx_seq = seq_add(self._rtx_seq, 1)
            await self._send(data, PROBE)
            self.budget.note_padding(len(data), now)
            self.padding_sent += 1
            self._padding_at = now
            sent += PADDING_PACKET_BYTES
        return sent

    # --- the per-packet path ----------------------------------------------------

    def summary(self) -> dict:
        """Counters for operators (admin API) and tests."""
        return {
            "packets": self.packets_sent, "retransmitted": self.retransmitted, "copies": self.copies_sent,
            "nacks_received": self.nacks_received, "nacks_crossed": self.nacks.crossed,
            "plis_received": self.plis_received,
            "stale_nack_keyframes": self.nacks.stale_keyframes,
            "red": any(key[0] == "audio/red" for key in self._out_pt),
            "fec_group": None if self._fec is None else self._fec.group,
            "reported_loss": round(self.reports.reported_loss, 3),
            "fec_packets": 0 if self._fec is None else self._fec.sender.fec_packets,
            "fec_oversize": 0 if self._fec is None else self._fec.oversize,
            "feedback_malformed": self.feedback_malformed,
            "remb_bitrate": self.remb_bitrate, "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 1),
            "paused": self._paused, "plis_while_paused": self.plis_while_paused, "padding": self.padding_sent,
            "layer": self.layer_name, "layer_switches": self.layer_switches,
            "view": None if self.view is None else list(self.view),
        }

    @property
    def copies_sent(self) -> int:
        return self.copies.sent

    @property
    def rtt(self) -> Optional[float]:
        """Round-trip time to the subscriber, from its receiver reports (None: not measured yet)."""
        return self.reports.rtt

    @property
    def reported_loss(self) -> float:
        return self.reports.reported_loss

    @property
    def ssrc(self) -> int:
        """The SSRC this down-track's media goes out under."""
        return self._ssrc

    def carries(self, codec: RTCRtpCodecParameters) -> bool:
        """Whether this subscriber negotiated `codec` (known once started)."""
        if not self.started:
            return False
        return self._out_payload_type(codec) is not None

    def _out_payload_type(self, codec: RTCRtpCodecParameters) -> Optional[int]:
        source_pt = codec.payloadType
        assert source_pt is not None  # a source's codecs are the ones its packets' payload types name
        payload_type = self._pt_for_source.get(source_pt, -1)
        if payload_type == -1:
            payload_type = self._pt_for_source[source_pt] = self._out_pt.get(_codec_key(codec))
        return payload_type

    def _protects(self, codec: RTCRtpCodecParameters) -> bool:
        source_pt = codec.payloadType
        assert source_pt is not None  # as in _out_payload_type
        protects = self._fec_for_source.get(source_pt)
        if protects is None:
            protects = self._fec_for_source[source_pt] = codec.mimeType.lower()[6:] in PROTECTABLE
        return protects

    def _is_vp8(self, codec: RTCRtpCodecParameters) -> bool:
        source_pt = codec.payloadType
        assert source_pt is not None  # as in _out_payload_type
        vp8 = self._vp8_for_source.get(source_pt)
        if vp8 is None:
            vp8 = self._vp8_for_source[source_pt] = codec.mimeType.lower() == "video/vp8"
        return vp8

    async def forward(self, packet: RtpPacket, codec: RTCRtpCodecParameters, keyframe_start: bool,
                      abs_send_time: int, now: float, late: bool = False) -> None:
        """Send one packet on. `late`: it was recovered from the publisher and the
        subscriber has been waiting for it (a NACK it sent for it found nothing)."""
        rewriter = self._rewriter
        if rewriter is None:  # not started
            return
        if self._paused:
            return
        if not rewriter.started:
            # time.monotonic(), not `now`: the clock the gate's resets read (callers may pass their own)
            admitted, ask = self._gate.admit(keyframe_start, time.monotonic())
            if not admitted:
                if ask and self.feed is not None:
                    self.feed.request_keyframe()
                return
            rewriter.switch_source(packet.sequence_number, packet.timestamp)
            if self._vp8 is not None:
                self._vp8.switch()
            if self._fec is not None:
                self._fec.reset()
        payload_type = self._out_payload_type(codec)
        if payload_type is None:
            return  # the subscriber did not negotiate this codec
        newest_sent = rewriter.last_sequence_number
        mapped = rewriter.map(packet.sequence_number, packet.timestamp)
        if mapped is None:
            return  # older than where this subscriber started
        seq, ts = mapped
        if self.kind == "video":
            self.reports.track_unsent(newest_sent, seq)
        fec = self._fec if self._fec is not None and self._protects(codec) else None
        payload = packet.payload
        if self._vp8 is not None and self._is_vp8(codec):
            payload = self._vp8.rewrite(payload)
        wire_pt, wire_payload = payload_type, payload
        if fec is not None:
            wire_pt, wire_payload = fec.payload_types.red, red_wrap(payload_type, payload)
        sent = SentPacket(seq, ts, packet.marker, wire_pt, wire_payload, packet.extensions.audio_level, now,
                          late=late)
        self._cache.put(sent)
        data = self._serialize(sent, self._ssrc, seq, wire_pt, wire_payload, abs_send_time)
        await self._send(data, self._media_class)
        self._media_meter.add(len(data) + PACKET_OVERHEAD_BYTES, now)
        self.packets_sent += 1
        self.octets_sent += len(wire_payload)
        if fec is not None and fec.active and not late and seq == rewriter.last_sequence_number:
            packets, octets = await fec.protect(sent, payload_type, payload, abs_send_time)
            self.packets_sent += packets
            self.octets_sent += octets
        if self.kind == "video" and not late and self.nacks.first_sent():
            self._update_fec()
        if late or self.kind == "audio":
            # On a lossy downlink, copies where a loss hurts most for the least bandwidth:
            # audio (small; no retransmission arrives before its playout deadline) and
            # packets already late (a lost one costs the subscriber another NACK round).
            loss = self.downlink_loss
            self.copies.after(data, loss.audio_copies if self.kind == "audio" else loss.copies)

    def skip_source(self, after_seq: int, upto_seq: int) -> None:
        """Source numbers after `after_seq` up to `upto_seq` were the publisher's FEC: no hole for them."""
        rewriter = self._rewriter
        if rewriter is not None and rewriter.started:
            rewriter.skip(after_seq, upto_seq)

    def note_reported_loss(self, fraction: float) -> None:
        """One receiver report's fraction lost for this stream (0..1)."""
        self.reports.note_reported_loss(fraction)
        self._update_fec()

    def _update_fec(self) -> None:
        if self._fec is not None:
            self._fec.update_loss(max(self.downlink_loss.value, self.reports.reported_loss))

    def _serialize(self, sent: SentPacket, ssrc: int, seq: int, payload_type: int, payload: bytes,
                   abs_send_time: int) -> bytes:
        writer = self._writer
        assert writer is not None  # set by start(); nothing is sent or cached before
        return writer.write(
            payload_type=payload_type, marker=sent.marker, sequence_number=seq, timestamp=sent.timestamp,
            ssrc=ssrc, payload=payload, abs_send_time=abs_send_time, audio_level=sent.audio_level,
        )

    async def _send(self, data: bytes, cls: int) -> None:
        """One packet to the subscriber; through its pacer when its downlink is narrow
        (`cls`: media/pacer.py's class, or PROBE for padding that tests beyond the rate)."""
        transport = self.transport
        assert transport is not None  # set by start(); nothing is sent before
        pacer = self._pacer
        if pacer.rate_bps is not None and cls != PROBE:
            now = time.monotonic()
            if not pacer.admit(len(data), cls, now):
                pacer.enqueue(transport, data, cls, now)
                return
        try:
            await transport._send_rtp(self._sequencer.stamp(data))
        except ConnectionError:
            pass

    # --- RTCP from the subscriber -------------------------------------------------

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.nacks_received += 1
            # Each packet once, however often the NACK lists it; aiortc's parse numbers the
            # packets after PID 65535 on from 65536 (no wrap).
            for seq in dict.fromkeys(seq & 0xFFFF for seq in packet.lost):
                await self._retransmit(seq)
        elif isinstance(packet, TransportFeedbackPacket):
            try:
                feedback = parse_fci(packet.fci)
            except ValueError:
                self.feedback_malformed += 1
                return
            self.budget.note_transport_feedback(feedback, time.monotonic())
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.plis_received += 1
            if self._paused:  # it has no picture because we paused it: nothing for the publisher to do
                self.plis_while_paused += 1
            elif self.feed is not None:
                self.feed.request_keyframe()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except (ValueError, struct.error):  # struct.error: more SSRCs claimed than the FCI holds
                return
            if self._ssrc in ssrcs:
                self.remb_bitrate = bitrate
                self.budget.estimate.note_remb(bitrate, frozenset(ssrcs), time.monotonic())
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if self.reports.on_report(report):
                    self._update_fec()

    async def _retransmit(self, seq: int) -> None:
        sent = self._cache.get(seq)
        if sent is None:
            return
        now = time.monotonic()
        decision = self.nacks.on_nack(sent, now, rtt=self.reports.rtt, congested=self.budget.congested,
                                      paused=self._paused, newest_sent=self._cache.newest_sequence_number)
        if decision.keyframe and self.feed is not None:
            self.feed.request_keyframe()
        if not decision.answer or not self.budget.allow_recovery(len(sent.payload) + RTP_HEADER_BYTES, now):
            return
        rtx_pt = self._out_rtx_pt.get(sent.payload_type)
        if rtx_pt is not None:
            data = self._serialize(sent, self._rtx_ssrc, self._rtx_seq, rtx_pt,
                                   seq.to_bytes(2, "big") + sent.payload, abs_send_time_now())
            self._rtx_seq = seq_add(self._rtx_seq, 1)
        else:
            data = self._serialize(sent, self._ssrc, seq, sent.payload_type, sent.payload, abs_send_time_now())
        self.retransmitted += 1
        await self._send(data, RECOVERY)
        # a lost retransmission costs the subscriber a whole retry interval (an RTT in
        # browsers): on a lossy downlink send a few copies
        self.copies.after(data, self.downlink_loss.copies)

    async def _run_rtcp(self) -> None:
        while True:
            # more often while the downlink is narrow: each report answered is an RTT sample,
            # and those samples are what tells a queue building there
            await asyncio.sleep((0.2 + 0.2 * random.random()) if self.budget.narrow else (0.5 + random.random()))
            await self.send_sender_report()

    async def send_sender_report(self) -> None:
        """Sender reports carry the publisher's NTP<->RTP mapping, so lip sync survives forwarding
        (composed by media/sender_reports.py)."""
        rewriter, transport, source = self._rewriter, self.transport, self.feed
        if rewriter is None or transport is None or source is None:
            return
        # paused, it goes on (with the mapping it last sent under): each report answered is an
        # RTT sample, and a probe for bringing it back is judged on those samples
        if not rewriter.started and not (self._paused and self.packets_sent):
            return
        # a browser stops reporting a stream that stopped: the probe's padding, on the RTX
        # stream, is what it still receives and reports on
        probe = None
        if self._paused and time.monotonic() - self._padding_at < PROBE_REPORT_S:
            probe = (self.padding_sent, self.padding_sent * PADDING_PACKET_BYTES)
        report = self._sender_reports.compose(source.sender_report, time.time(), rewriter,
                                              packets=self.packets_sent, octets=self.octets_sent, probe=probe)
        if report is None:
            return
        self.reports.sender_report_sent(report.ntp_timestamp)
        await send_rtcp(transport, report.packets)

    def __repr__(self) -> str:
        return f"DownTrack({self.subscriber_id}, {self.kind}, mid={self._mid})"
