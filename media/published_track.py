"""One track a participant publishes: the single receive-side object per source.

Registered with the publisher's DTLS transport in place of aiortc's
RTCRtpReceiver, so packets never reach aiortc's jitter buffers or decoders.
Each packet is inspected once (codec, RTX unwrap, keyframe start) and handed to
every attached down-track synchronously: there is no queue to grow here.

A source of the packet path (media/packet_path.py `DownTrackSource`): it knows its
subscribers only as `PacketSink`s, connected and disconnected by the room
(`packet_path.connect` / `disconnect`); when it stops, it disconnects them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtp import (
    RTCP_PSFB_PLI,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpSrPacket,
    RtpPacket,
)

from .bitrate_policy import publisher_bitrate
from .codec_inspect import keyframe_detector, keyframe_size_reader
from .keyframe_requests import KeyframeRequester
from .nack_generator import AUDIO_DEADLINE_S, VIDEO_DEADLINE_S
from .packet_path import PacketSink, disconnect
from .rate_meter import RateMeter
from .receiver_reports import DEFAULT_RTT_S
from .red import RedError, parse_red
from .rtcp_io import send_rtcp
from .rtp_clock import SenderReport, abs_send_time_now
from .rtx_unwrap import RtxUnwrapper
from .sdp_video_fec import video_fec_in_codecs
from .seqnum import seq_add
from .ulpfec import UlpfecError, zeroed_extensions
from .uplink_estimate import UplinkEstimator
from .uplink_fec import UplinkVideoFec
from .uplink_nacks import UplinkNacks
from .uplink_reports import UplinkReports

if TYPE_CHECKING:
    from .taps import PacketTap

logger = logging.getLogger(__name__)


def _uplink_video_fec(kind: str, parameters: RTCRtpReceiveParameters) -> Optional[UplinkVideoFec]:
    """RED + ULPFEC handling when the publisher's answer kept video red and ulpfec."""
    payload_types = video_fec_in_codecs(parameters.codecs) if kind == "video" else None
    if payload_types is None:
        return None
    vp8 = frozenset(c.payloadType for c in parameters.codecs
                    if c.mimeType.lower() == "video/vp8" and c.payloadType is not None)
    return UplinkVideoFec(payload_types, zeroed_extensions(parameters.headerExtensions), vp8)


# A stream with no packet for this long has stopped (frames come every 33-100 ms, 200 ms at a
# simulcast layer's starting 5 fps): the next packet starts it again (`arriving_since`).
STREAM_GAP_S = 0.5


class PublishedTrack:
    def __init__(
        self,
        *,
        participant_id: str,
        kind: str,
        transport: RTCDtlsTransport,
        parameters: RTCRtpReceiveParameters,
        rtcp_ssrc: int,
        rtt_s: Callable[[], float] = lambda: DEFAULT_RTT_S,
        rid: Optional[str] = None,
    ) -> None:
        self.participant_id = participant_id
        # One layer of a simulcast publication (media/simulcast.py), which takes the packets
        # from the transport and sends the publisher one REMB for all its layers.
        self.rid = rid
        self.kind = kind
        self.transport = transport
        # (aiortc types payloadType Optional: negotiated codecs all have one)
        self.codecs: dict[int, RTCRtpCodecParameters] = {
            c.payloadType: c for c in parameters.codecs if c.payloadType is not None
        }
        # retransmissions back into the packets they repeat (media/rtx_unwrap.py); its payload
        # types kept here too: every packet is tested against them, without a lookup through it
        self._rtx = RtxUnwrapper(parameters)
        self._rtx_types = self._rtx.payload_types
        self.media_ssrc: Optional[int] = next(
            (e.ssrc for e in parameters.encodings if e.ssrc), None
        )
        self._parameters = parameters
        self._red_types = {pt for pt, c in self.codecs.items() if c.mimeType.lower() == "audio/red"}
        self._red_codec = next((self.codecs[pt] for pt in sorted(self._red_types)), None)
        self._uplink_fec = _uplink_video_fec(kind, parameters)
        self._keyframe_detectors = {
            pt: keyframe_detector(c.name) for pt, c in self.codecs.items() if kind == "video"
        }
        self._keyframe_sizes = {pt: keyframe_size_reader(c.name) for pt, c in self.codecs.items() if kind == "video"}
        self._rtcp_ssrc = rtcp_ssrc
        self._downtracks: list[PacketSink] = []
        # what it sends, for the subscribers' downlink control: over a few seconds, as keyframes come in bursts
        self._offered = RateMeter(bucket_s=0.25, buckets=12)
        # a layer's frame ends (marker bits): the publication compares its layers' frame rates
        self._frames = RateMeter(bucket_s=0.25, buckets=8) if rid is not None else None
        self._taps: list["PacketTap"] = []
        # receiver reports and REMB toward the publisher (media/uplink_reports.py)
        self.reports = UplinkReports(transport, rtcp_ssrc)
        self._stream_seen = False  # a packet came: another SSRC from now on is a new stream
        # Audio too: browsers retransmit Opus when "nack" is negotiated (we offer it).
        self.nacks = UplinkNacks(transport, rtcp_ssrc=rtcp_ssrc,
                                 deadline_s=VIDEO_DEADLINE_S if kind == "video" else AUDIO_DEADLINE_S,
                                 media_ssrc=lambda: self.media_ssrc, rtt_s=rtt_s, on_gave_up=self._nack_gave_up)
        self._bitrate_estimator = UplinkEstimator(participant_id) if kind == "video" and rid is None else None
        self._keyframes = KeyframeRequester(self._send_pli)
        self.uplink_estimate: Optional[int] = None  # bit/s, from abs-send-time arrival patterns
        self.sender_report: Optional[SenderReport] = None
        self._rtcp_task: Optional[asyncio.Task] = None
        self.stopped = False
        # counters an operator (and the tests) can read
        self.packets_received = 0
        self.packets_dropped = 0
        self.red_packets = 0
        self.red_distance = 0  # the most earlier frames one RED packet carried (Chrome: 1 by default)
        self.red_recovered = 0  # packets the uplink lost that a RED copy brought back
        self.red_recovered_alone = 0  # ... sent on their own to RED subscribers on a lossy downlink
        self.duplicates_dropped = 0
        self.last_codec: Optional[RTCRtpCodecParameters] = None
        # (width, height) of its newest VP8 keyframe: which layer a subscriber's tile needs
        self.frame_size: Optional[tuple[int, int]] = None
        self.last_packet_at = float("-inf")
        self.arriving_since = float("inf")  # the first packet after a gap of STREAM_GAP_S or more
        # told at the first packet of each keyframe, before it is forwarded (a layer switch starts there)
        self.on_keyframe: Optional[Callable[[PublishedTrack], None]] = None

    # --- wiring -------------------------------------------------------------

    def start(self) -> None:
        if self.rid is None:
            self.transport._register_rtp_receiver(self, self._parameters)
        self._rtcp_task = asyncio.ensure_future(self._run_rtcp())

    def add_downtrack(self, downtrack: PacketSink, keyframe: bool = True) -> None:
        """`keyframe`: ask the publisher for one (not when switching to a layer at one of its keyframes)."""
        # a new list, not the one a forwarding loop suspended at an await is going through
        if downtrack not in self._downtracks:
            self._downtracks = [*self._downtracks, downtrack]
        if self.kind == "video" and keyframe:
            self.request_keyframe()

    def remove_downtrack(self, downtrack: PacketSink) -> None:
        if downtrack in self._downtracks:
            self._downtracks = [d for d in self._downtracks if d is not downtrack]

    @property
    def downtracks(self) -> list[PacketSink]:
        return list(self._downtracks)

    def add_tap(self, tap: "PacketTap") -> None:
        self._taps.append(tap)

    def remove_tap(self, tap: "PacketTap") -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    def offered_bps(self, now: float) -> float:
        return self._offered.bps(now)

    def frame_rate(self, now: float) -> float:
        """Frames per second over the last two seconds (a simulcast layer's; 0 for other tracks)."""
        return 0.0 if self._frames is None else self._frames.bps(now) / 8

    def request_keyframe(self) -> None:
        if self.kind == "video" and not self.stopped:
            self._keyframes.request()

    @property
    def keyframe_requests_sent(self) -> int:
        return self._keyframes.sent_count

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        if self.rid is None:
            self.transport._unregister_rtp_receiver(self)
        self._keyframes.close()
        self.nacks.close()
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            await asyncio.gather(self._rtcp_task, return_exceptions=True)
        for downtrack in list(self._downtracks):
            disconnect(downtrack, self)
        self._downtracks = []
        for tap in self._taps:
            tap.close()
        self._taps.clear()

    # --- called by aiortc's RTP router --------------------------------------

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        codec = self.codecs.get(packet.payload_type)
        if codec is None:
            self.packets_dropped += 1
            return
        self.packets_received += 1

        if self._bitrate_estimator is not None and packet.extensions.abs_send_time is not None:
            estimate = self._bitrate_estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            if estimate is not None:
                self.uplink_estimate = estimate
                await self._send_remb()

        if packet.payload_type in self._rtx_types:
            original = self._rtx.unwrap(packet, self.media_ssrc)
            if original is None:
                return  # padding-only probe or unknown association: nothing to forward
            packet = original
            codec = self.codecs[packet.payload_type]
            retransmitted = True
        elif not packet.payload:
            await self._handle_padding(packet, codec)
            return
        else:
            retransmitted = False

        if packet.ssrc != self.media_ssrc and self._stream_seen:
            self._restart_stream()  # a new source on this track: its numbers start anew
        self.media_ssrc = packet.ssrc
        self._stream_seen = True
        if not retransmitted:
            self.reports.count(packet, codec.clockRate)

        now = time.monotonic()
        if self._uplink_fec is not None and codec.payloadType == self._uplink_fec.payload_types.red:
            await self._handle_video_red(packet, now, retransmitted)
        elif codec.payloadType in self._red_types:
            await self._handle_red(packet, codec, now)
        elif codec.mimeType.lower() == "video/ulpfec":
            self.packets_dropped += 1  # FEC outside RED: not what browsers send, and not media
        else:
            await self._deliver(packet, codec, now)

    async def _handle_padding(self, packet: RtpPacket, codec: RTCRtpCodecParameters) -> None:
        """A padding-only packet on the media SSRC (a bandwidth probe from a sender without
        RTX): it takes a number in the media's sequence, so it is counted as arrived (no NACK,
        not reported lost) and subscribers number on past it (no hole they would NACK)."""
        if packet.ssrc != self.media_ssrc or not self._stream_seen:
            return  # before the stream or beside it: nothing to keep in step with
        self.reports.count(packet, codec.clockRate)
        new_gaps = self.nacks.generator.on_packet(packet.sequence_number, time.monotonic())
        if new_gaps:
            await self.nacks.ask(new_gaps)
        before = seq_add(packet.sequence_number, -1)
        for downtrack in self._downtracks:
            downtrack.skip_source(before, packet.sequence_number)

    def _restart_stream(self) -> None:
        """A new SSRC on this track: its sequence numbers have nothing to do with the old ones."""
        self.nacks.restart()
        self.reports.restart()
        if self._uplink_fec is not None:
            self._uplink_fec = _uplink_video_fec(self.kind, self._parameters)
        for downtrack in self._downtracks:
            downtrack.source_restarted()
        self.request_keyframe()

    async def _handle_video_red(self, packet: RtpPacket, now: float, retransmitted: bool) -> None:
        """Video RED from the publisher: FEC rebuilds what it can; media goes on unwrapped."""
        fec = self._uplink_fec
        assert fec is not None  # only RED on the uplink FEC's payload type comes here
        self.red_packets += 1
        try:
            block_type, data = fec.unwrap(packet.payload)
        except RedError:
            self.packets_dropped += 1
            return
        if block_type == fec.payload_types.ulpfec:
            if not retransmitted:  # browsers never resend FEC; if one did, it would add nothing
                await self._handle_uplink_fec(packet, data, now)
            return
        codec = self.codecs.get(block_type)
        if codec is None or block_type in (fec.payload_types.red, fec.payload_types.rtx) or not data:
            self.packets_dropped += 1
            return
        wire = None if retransmitted else getattr(packet, "raw", None) or None
        packet.payload_type, packet.payload = block_type, data  # unwrapped in place: it is ours
        rebuilt: list[bytes] = []
        if fec.active:
            try:
                rebuilt = fec.media_arrived(packet, wire)
            except UlpfecError:
                pass
        await self._deliver(packet, codec, now)
        await self._deliver_rebuilt(rebuilt, now)

    async def _handle_uplink_fec(self, packet: RtpPacket, data: bytes, now: float) -> None:
        fec = self._uplink_fec
        assert fec is not None  # called from _handle_video_red
        try:
            rebuilt = fec.fec_arrived(packet.sequence_number, packet.timestamp, packet.ssrc, data)
        except UlpfecError:
            fec.fec_malformed += 1
            rebuilt = []
        # what it rebuilt first: a frame's lost last packet then goes out in order, no hole
        await self._deliver_rebuilt(rebuilt, now)
        seq = packet.sequence_number
        nack = self.nacks.generator
        nack.forget([seq])  # arrived late: it was never media to recover
        await self.nacks.ask(fec.settle(seq, nack.on_packet(seq, now), nack, self._skip_fec_numbers))

    async def _deliver_rebuilt(self, rebuilt: list[bytes], now: float) -> None:
        for data in rebuilt:
            try:
                packet = RtpPacket.parse(data)
            except ValueError:
                continue
            codec = self.codecs.get(packet.payload_type)
            if codec is None or not self.nacks.generator.wants(packet.sequence_number):
                continue  # a retransmission brought it already
            fec = self._uplink_fec
            assert fec is not None  # only the uplink FEC rebuilds packets (a restart replaces it, never removes it)
            fec.note_media(packet)
            fec.recovered += 1
            await self._deliver(packet, codec, now)

    def _skip_fec_numbers(self, after_seq: int, upto_seq: int) -> None:
        for downtrack in self._downtracks:
            downtrack.skip_source(after_seq, upto_seq)

    async def _handle_red(self, packet: RtpPacket, red_codec: RTCRtpCodecParameters, now: float) -> None:
        """A RED packet: its primary goes on as usual, and the copies it carries of
        packets the uplink lost are recovered here, a round trip sooner than a NACK."""
        self.red_packets += 1
        try:
            blocks = parse_red(packet.payload)
        except RedError:
            self.packets_dropped += 1
            return
        self.red_distance = max(self.red_distance, len(blocks) - 1)
        primary = blocks[-1]
        codec = self.codecs.get(primary.payload_type)
        if codec is None or codec.payloadType in self._red_types or not primary.data:
            self.packets_dropped += 1
            return
        for distance, block in zip(range(len(blocks) - 1, 0, -1), blocks[:-1]):
            seq = seq_add(packet.sequence_number, -distance)
            if block.payload_type != primary.payload_type or not block.data or not self.nacks.generator.wants(seq):
                continue
            self.red_recovered += 1
            copy = RtpPacket(payload_type=block.payload_type, sequence_number=seq, ssrc=packet.ssrc,
                             timestamp=(packet.timestamp - block.timestamp_offset) & 0xFFFFFFFF, payload=block.data)
            await self._deliver(copy, codec, now, red_copy=True)
        plain = RtpPacket(payload_type=primary.payload_type, marker=packet.marker,
                          sequence_number=packet.sequence_number, timestamp=packet.timestamp,
                          ssrc=packet.ssrc, payload=primary.data)
        plain.extensions = packet.extensions
        await self._deliver(plain, codec, now, red=(packet, red_codec))

    async def _deliver(self, packet: RtpPacket, codec: RTCRtpCodecParameters, now: float, *,
                       red: Optional[tuple[RtpPacket, RTCRtpCodecParameters]] = None,
                       red_copy: bool = False) -> None:
        """NACK bookkeeping, then every subscriber and tap. Audio arrives here as plain
        Opus; `red` is the RED packet it came in, for subscribers that negotiated RED.
        `red_copy`: recovered from the RED packet that follows; a subscriber that takes
        RED gets it inside that packet anyway, and on its own too only where its
        downlink loses packets (a second, independent chance for a frame the uplink
        already lost once, for one small packet)."""
        self.last_codec = codec
        nack = self.nacks.generator
        new_gaps = nack.on_packet(packet.sequence_number, now)
        if nack.last_was_duplicate:
            # a retransmission after the packet came back another way (RED, FEC, an earlier
            # one), or past the deadline: subscribers have it or no longer want it
            self.duplicates_dropped += 1
            return
        recovered = nack.last_was_recovered
        if self._uplink_fec is not None and self._uplink_fec.active:
            new_gaps = self._uplink_fec.settle(packet.sequence_number, new_gaps, nack, self._skip_fec_numbers)
        if new_gaps:
            await self.nacks.ask(new_gaps)

        detect = self._keyframe_detectors.get(codec.payloadType) if codec.payloadType is not None else None
        keyframe_start = detect is not None and detect(packet.payload)
        if now - self.last_packet_at >= STREAM_GAP_S:
            self.arriving_since = now
        self.last_packet_at = now
        if keyframe_start:
            self._keyframes.keyframe_started()
            read_size = self._keyframe_sizes.get(codec.payloadType) if codec.payloadType is not None else None
            self.frame_size = (read_size(packet.payload) if read_size else None) or self.frame_size
            if self.on_keyframe is not None:
                self.on_keyframe(self)

        self._offered.add(len(packet.payload), now)
        if packet.marker and self._frames is not None:
            self._frames.add(1, now)
        send_time = abs_send_time_now()  # one clock read per packet, not per subscriber
        for downtrack in self._downtracks:
            try:
                if self._red_codec is not None and downtrack.carries(self._red_codec):
                    if red_copy:
                        if downtrack.downlink_loss.copies == 1:
                            continue
                        self.red_recovered_alone += 1
                    if red is not None:
                        await downtrack.forward(red[0], red[1], False, send_time, now, late=recovered)
                        continue
                await downtrack.forward(packet, codec, keyframe_start, send_time, now, late=recovered)
            except Exception:  # one broken subscriber must not stop the others
                logger.exception("forwarding to %s failed", downtrack)
        if self._uplink_fec is not None and self._uplink_fec.active:
            # FEC that arrived before this (late) packet
            self._uplink_fec.close_up(packet.sequence_number, self._skip_fec_numbers)

        if self._taps:  # after forwarding: recording and analysis never delay the call
            arrived_at = time.monotonic()
            for tap in list(self._taps):
                try:
                    tap.on_packet(packet, codec, arrived_at)
                except Exception:
                    logger.exception("tap %s failed and was removed", tap)
                    self.remove_tap(tap)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpSrPacket):
            self.sender_report = SenderReport(
                ntp_timestamp=packet.sender_info.ntp_timestamp,
                rtp_timestamp=packet.sender_info.rtp_timestamp,
                received_at=time.time(),
            )

    def _handle_disconnect(self) -> None:
        pass  # the peer's close path stops this track

    # --- RTCP toward the publisher -------------------------------------------

    async def _send_pli(self) -> None:
        if self.media_ssrc is not None:
            await send_rtcp(
                self.transport,
                [RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=self.media_ssrc)],
            )

    async def _send_remb(self) -> None:
        if self.rid is not None:
            return  # the simulcast publication sends one for all its layers
        bitrate = publisher_bitrate(self.uplink_estimate, (d.remb_bitrate for d in self._downtracks))
        await self.reports.send_remb(bitrate, self.media_ssrc)

    def _nack_gave_up(self) -> None:
        if self.kind == "video":
            # Retransmission can no longer complete those frames in time: repair the picture instead.
            self.request_keyframe()

    def summary(self) -> dict:
        """Counters for operators (admin API) and tests."""
        return {
            "packets": self.packets_received, "dropped": self.packets_dropped,
            # first transmissions the uplink lost, as the receiver reports tell the publisher
            # (no count before a first transmission: the track may have had only retransmissions)
            "lost": self.reports.lost,
            "codec": self.last_codec.mimeType if self.last_codec else None,
            "red": self._red_codec is not None, "red_packets": self.red_packets, "red_distance": self.red_distance,
            "red_recovered": self.red_recovered, "red_recovered_alone": self.red_recovered_alone,
            "nack": self.nack_stats,
            "uplink_fec": None if self._uplink_fec is None else {
                "fec_received": self._uplink_fec.fec_received, "rebuilt": self._uplink_fec.recovered,
                "malformed": self._uplink_fec.fec_malformed},
            "keyframe_requests": self.keyframe_requests_sent, "duplicates_dropped": self.duplicates_dropped,
            "offered_kbps": round(self.offered_bps(time.monotonic()) / 1000),
        }

    @property
    def uplink_loss(self) -> float:
        """First-transmission loss on the publisher's uplink (0..1, smoothed), as its NACKs measure it."""
        return self.nacks.generator.loss.value

    @property
    def nack_stats(self) -> dict[str, int]:
        return self.nacks.stats

    async def _run_rtcp(self) -> None:
        """Receiver reports: the publisher's congestion control and RTT need them."""
        while True:
            await asyncio.sleep(0.5 + random.random())
            if await self.reports.send_report(self.media_ssrc, self.sender_report) and self.kind == "video":
                await self._send_remb()  # also when only the subscribers' estimates changed

    def __repr__(self) -> str:
        layer = "" if self.rid is None else f", rid={self.rid}"
        return f"PublishedTrack({self.participant_id}, {self.kind}{layer})"
