"""A load-test publisher's video sent the way Chrome sends it once red + ulpfec are negotiated.

Where the server's offer lists `red/90000`, `ulpfec/90000` and `rtx/90000 apt=<red>` on
the section a participant publishes on, Chrome (libwebrtc) answers them and then:

- wraps every video packet in RED (RFC 2198): one block, a 1-byte header (F=0, the VP8
  payload type) and the VP8 payload; SSRC, sequence number, timestamp, marker and
  header extensions are those the plain packet would have had;
- sends ULPFEC (RFC 5109) RED-wrapped too (block type ulpfec), on the media SSRC, with
  the sequence numbers right after the packet that ended the frame completing an FEC
  batch (the marker packet), that frame's timestamp, marker 0. FEC protects the media
  packets in their plain form (VP8 payload type) with the extensions written after FEC
  (abs-send-time, toffset, transport-cc; video-timing from its pacer byte) zeroed, as
  receivers zero them before decoding (media.ulpfec.MUTABLE_EXTENSIONS);
- answers NACK over the rtx payload type whose apt is red, on the RTX SSRC (original
  sequence number + RED payload), at most once per RTT per packet; FEC is never resent.

aiortc negotiates none of this, so `ChromeVideoSender` takes over one RTCRtpSender's
RTP loop, retransmissions and receiver-report handling (installed by
loadtest.red_video.send_video_fec when the sender starts on VP8). media.video_fec.
VideoFecSender is the server's sender (its own loss table, a fixed group per FEC packet,
one frame at a time), so Chrome's generator is modelled here instead; both build FEC
with media.ulpfec.build_fec.

How much FEC: libwebrtc's hybrid NACK/FEC, read in modules/video_coding/media_opt_util.cc
(VCMFecMethod::ProtectionFactor, VCMNackFecMethod, VCMLossProtectionLogic),
fec_controller_default.cc, fec_rate_table.h and modules/rtp_rtcp/source/
ulpfec_generator.cc, forward_error_correction_internal.cc:

- loss: the receiver reports' fraction lost for the media SSRC (the SFU reports loss
  before FEC recovery), max over the last 10 s (kMaxFilter); zero loss, no FEC;
- code rates (ProtectionFactor): kFecRateTable by loss and by a rate index, the bits per
  frame scaled by (pixels / 704x576)^-0.3 in 5-kbit steps. Delta frames get at least
  51/255 (the "first partition") when a frame is over half a 1460-byte packet; key frames
  max(loss, 2 x delta, the table at the rate index boosted by the key/delta packet-count
  ratio, at least 2x); both under 129/255, then made relative to media packets
  (ConvertFECRate: r / (255 - r));
- VCMNackFecMethod: below 20 ms RTT (kLowRttNackMs) no FEC on delta frames (key frames keep
  theirs); none at all while a frame is under 700 bytes (400 at CIF or smaller, 1000 above
  VGA) and the RTT under 200 ms; a batch covers at most max(1, round(2 x fps x RTT)) frames, 6 at most;
- UlpfecGenerator: media packets (the first 48) gather until a frame ends and either that many
  frames are in, or the FEC overhead is within 50/256 above the rate and enough packets are
  in (4 when the rate is over 80/256, one more at 2+ packets per frame); then
  round(n x rate / 256) FEC packets, at least one, at the key-frame rate if the batch has one.

Where this differs, toward less protection than Chrome unless said:
- kFecRateTable is not copied: `fec_rate_table` is a closed form,
  min(127, 42 + 20 i, min(4, 0.8 + 0.15 i) x loss) for rate index i and loss in 1/255,
  checked against the table for every rate index: after the 51 floor and the 128 cap it is
  never above it below 47 % loss, and is lowest relative to it at 10-20 % loss and high rate
  indices (720p, 1080p). Where the floor does not apply (under half a packet per frame) delta
  frames get no FEC here and key frames the loss rate only;
- Chrome's rate input is its bandwidth estimate (media + protection); here the media bitrate
  sent over the last second (lower between a clip's keyframes), so the rate index is at most
  Chrome's. Chrome also takes the protection bitrate out of its encoder's target; the clip's
  bitrate is fixed here. The RTT is aiortc's, from the SFU's receiver reports;
- packet masks: libwebrtc's interleaved masks (FEC packet r protects media packets r, r + k,
  ...), which it uses above 12 media packets; at 12 or fewer it takes optimised masks
  (fec_private_tables_random) whose groups overlap. With one FEC packet they are equal; else
  ours leave more lost packets unrecovered (at 6 packets and 3 FEC, 30 % random loss: 51 % of
  the lost ones against 45 %), except with 8-12 packets and 2-4 FEC packets at 30 % loss, where
  they leave up to 5 percentage points fewer (the one place this model can out-protect Chrome);
- the loss filter keeps every report of the last 10 s (libwebrtc: per-second maxima of the
  latest report, sampled when its rates update), and the rates are refreshed once per frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Optional, Protocol, cast

from aiortc import RTCRtpSender, clock
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import HeaderExtensionsMap, RtcpRrPacket, RtcpSrPacket, RtpPacket, wrap_rtx
from aiortc.utils import random32, uint16_add, uint32_add

from loadtest.publisher import ResendGuard, leave_rtp_loop
from media.codec_inspect import vp8_is_keyframe_start
from media.sdp_video_fec import VideoFecPayloadTypes
from media.ulpfec import build_fec, zero_extensions
from media.video_fec import red_wrap

logger = logging.getLogger(__name__)

# --- libwebrtc's constants (media_opt_util.h/.cc, ulpfec_generator.cc) ---------------------------------
LOW_RTT_NACK_MS = 20  # kLowRttNackMs: below it NACK alone (no FEC on delta frames)
MAX_RTT_TURN_OFF_FEC_MS = 200  # BitRateTooLowForFec applies below this RTT
UPPER_LIMIT_FRAMES_FEC = 6  # kUpperLimitFramesFec
LOSS_MAX = 129  # kPacketLossMax: loss and code rates stay below it (~50 %)
FIRST_PARTITION_PROTECTION = 51  # 255 x 0.2
MAX_PAYLOAD_SIZE = 1460  # VCMProtectionMethod::_maxPayloadSize, for packets per frame
REFERENCE_PIXELS = 704 * 576
LOSS_WINDOW_S = 10.0  # kLossPrHistorySize x kLossPrShortFilterWinMs
PACKETS_PER_FRAME_ALPHA = 0.9999  # VCMLossProtectionLogic's packets-per-frame filters, per ms
MAX_MEDIA_PACKETS = 48  # kUlpfecMaxMediaPackets: masks cover no more
MAX_EXCESS_OVERHEAD = 50  # Q8
MIN_MEDIA_PACKETS = 4  # kMinMediaPackets, above HIGH_PROTECTION_THRESHOLD
HIGH_PROTECTION_THRESHOLD = 80
MIN_MEDIA_PACKETS_ADAPTATION = 2.0  # packets per frame from which one more packet is wanted
RATE_WINDOW_S = 1.0  # frames this recent give the bitrate and frame rate
# RtpPacketHistory as a video sender sets it up: kMinSendSidePacketHistorySize packets,
# culled after kMinPacketDurationMs or kPacketCullingDelayFactor x RTT, whichever is longer
# (aiortc's own keeps 128 packets: under a second of 720p, short of the SFU's 1 s of NACKs).
HISTORY_MAX_PACKETS = 600
HISTORY_MIN_S = 1.0
HISTORY_RTT_FACTOR = 3


@dataclass(frozen=True)
class FecParams:
    """libwebrtc's FecProtectionParams: FEC packets per media packet x 256, and frames per batch."""

    delta: int = 0
    key: int = 0
    max_frames: int = 1


def fec_rate_table(rate_index: int, loss: int) -> int:
    """A closed-form stand-in for kFecRateTable[rate_index * 129 + loss] (loss in 1/255), never
    above it once ProtectionFactor's floor and cap apply (see the module docstring)."""
    return int(min(127, 42 + 20 * rate_index, min(4.0, 0.8 + 0.15 * rate_index) * loss))


def _trunc_div(a: int, b: int) -> int:
    """C integer division (toward zero)."""
    return int(a / b)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def convert_fec_rate(rate: int) -> int:
    """ConvertFECRate: a share of all packets (media + FEC) in 1/255 -> FEC per media packet in 1/256."""
    return min(255, int(0.5 + 255.0 * rate / (255 - rate)))


def chrome_fec_params(*, loss: float, rtt_ms: int, bitrate_bps: float, fps: float, width: int, height: int,
                      packets_per_frame: float, packets_per_key_frame: float) -> FecParams:
    """VCMNackFecMethod::UpdateParameters for one stream (one temporal layer)."""
    fps = max(fps, 1.0)
    bits_per_frame = int(bitrate_bps / 1000 / fps)  # kbit, BitsPerFrame
    max_frames = _clamp(int(2.0 * fps * rtt_ms / 1000 + 0.5), 1, UPPER_LIMIT_FRAMES_FEC)
    loss255 = min(int(255 * loss), LOSS_MAX - 1)
    if loss255 <= 0:
        return FecParams(0, 0, max_frames)
    pixels = max(width * height, 1)
    effective_rate = int(bits_per_frame * (pixels / REFERENCE_PIXELS) ** -0.3)
    rate_index = _clamp(_trunc_div(effective_rate - 5, 5), 0, 49)
    delta = 0
    if int(1.5 + bits_per_frame * 1000 / (8 * MAX_PAYLOAD_SIZE)) > 1:
        delta = max(fec_rate_table(rate_index, loss255), FIRST_PARTITION_PROTECTION)
    delta = min(delta, LOSS_MAX - 1)
    per_delta, per_key = int(0.5 + packets_per_frame), int(0.5 + packets_per_key_frame)
    boost = max(2, per_key // per_delta if per_delta > 0 else 1)
    key_index = _clamp(1 + _trunc_div(boost * effective_rate - 5, 5), 0, 49)
    # (without the floor the stand-in table is not checked against Chrome's: the loss alone then)
    key_table = fec_rate_table(key_index, loss255) if delta else 0
    key = max(loss255, min(2 * delta, LOSS_MAX - 1), key_table)
    key = min(key, LOSS_MAX - 1)
    if rtt_ms < LOW_RTT_NACK_MS:
        delta = 0
    max_bytes = 400 if pixels <= 352 * 288 else 1000 if pixels > 640 * 480 else 700
    if 1000 * bits_per_frame // 8 < max_bytes and rtt_ms < MAX_RTT_TURN_OFF_FEC_MS:
        delta = key = 0  # BitRateTooLowForFec
    return FecParams(convert_fec_rate(delta), convert_fec_rate(key), max_frames)


def num_fec_packets(media_packets: int, rate: int) -> int:
    """ForwardErrorCorrection::NumFecPackets: round(n x rate / 256), at least one if rate > 0."""
    count = (media_packets * rate + (1 << 7)) >> 8
    return 1 if rate > 0 and count == 0 else count


def vp8_keyframe_size(payload: bytes) -> Optional[tuple[int, int]]:
    """Width and height from the first packet of a VP8 keyframe (RFC 6386 9.1), else None."""
    if not vp8_is_keyframe_start(payload):
        return None
    try:
        _, frame = VpxPayloadDescriptor.parse(payload)
    except ValueError:
        return None
    if len(frame) < 10 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(frame[6:8], "little") & 0x3FFF, int.from_bytes(frame[8:10], "little") & 0x3FFF


class ChromeFecController:
    """What Chrome's FEC controller learns of the stream it sends, and the FecParams it derives."""

    def __init__(self) -> None:
        self._reports: deque[tuple[float, float]] = deque()  # (time, fraction lost)
        self._frames: deque[tuple[float, int]] = deque()  # (time, payload bytes) in RATE_WINDOW_S
        self._per_frame: dict[bool, tuple[float, float]] = {}  # keyframe? -> (filtered packets, when)
        self.width, self.height = 704, 576  # VCMLossProtectionLogic's size until a keyframe tells
        self.params = FecParams()
        self.rtt_ms = 0
        self.loss = 0.0

    def on_loss_report(self, now: float, fraction_lost: float) -> None:
        self._reports.append((now, fraction_lost))

    def filtered_loss(self, now: float) -> float:
        """kMaxFilter: the highest loss reported in the last 10 s (the latest report at least)."""
        while len(self._reports) > 1 and now - self._reports[0][0] > LOSS_WINDOW_S:
            self._reports.popleft()
        return max((loss for _, loss in self._reports), default=0.0)

    def on_frame(self, now: float, payloads: list[bytes], keyframe: bool) -> None:
        self._frames.append((now, sum(len(p) for p in payloads)))
        while now - self._frames[0][0] >= RATE_WINDOW_S:
            self._frames.popleft()
        size = vp8_keyframe_size(payloads[0]) if keyframe else None
        if size is not None:
            self.width, self.height = size
        # an ExpFilter per frame type: alpha^(ms since the last sample)
        filtered, at = self._per_frame.get(keyframe, (float(len(payloads)), now))
        alpha = PACKETS_PER_FRAME_ALPHA ** ((now - at) * 1000)
        self._per_frame[keyframe] = (alpha * filtered + (1 - alpha) * len(payloads), now)

    def update(self, now: float, rtt_s: Optional[float]) -> FecParams:
        """FecControllerDefault::UpdateFecRates with what is known now (RTT 0 until measured, as there)."""
        self.rtt_ms = int((rtt_s or 0.0) * 1000)
        self.loss = self.filtered_loss(now)
        per_frame = self._per_frame.get(False, (0.0, now))[0]
        self.params = chrome_fec_params(
            loss=self.loss, rtt_ms=self.rtt_ms, bitrate_bps=sum(b for _, b in self._frames) * 8 / RATE_WINDOW_S,
            fps=len(self._frames) / RATE_WINDOW_S, width=self.width, height=self.height,
            packets_per_frame=per_frame, packets_per_key_frame=self._per_frame.get(True, (per_frame, now))[0])
        return self.params


class UlpfecGenerator:
    """libwebrtc's UlpfecGenerator: when FEC is made, over which packets, how many, with which masks.

    Feed media packets in send order in their protected form; `add` returns the FEC
    payloads (without RED) due after a packet, only ever after a frame's marker packet.
    """

    def __init__(self) -> None:
        self._params = FecParams()
        self._pending: Optional[FecParams] = None
        self._packets: list[bytes] = []
        self._frames = 0
        self._keyframe = False
        self._min_packets = 1

    def set_params(self, params: FecParams) -> None:
        """Taken with the next packet, as SetProtectionParameters."""
        self._pending = params

    @property
    def rate(self) -> int:
        return self._params.key if self._keyframe else self._params.delta

    def add(self, packet: bytes, keyframe: bool) -> list[bytes]:
        if self._pending is not None:
            self._params, self._pending = self._pending, None
            self._min_packets = MIN_MEDIA_PACKETS if self.rate > HIGH_PROTECTION_THRESHOLD else 1
        self._keyframe |= keyframe
        if len(self._packets) < MAX_MEDIA_PACKETS:
            self._packets.append(packet)
        if not packet[1] & 0x80:
            return []
        self._frames += 1
        if self._frames < self._params.max_frames and not (self._overhead_ok() and self._enough_packets()):
            return []
        count = num_fec_packets(len(self._packets), self.rate)
        fec = [build_fec(self._packets[row::count]) for row in range(count)]  # interleaved masks
        self._packets, self._frames, self._keyframe = [], 0, False
        return fec

    def _overhead_ok(self) -> bool:
        n = len(self._packets)
        return (num_fec_packets(n, self.rate) << 8) // n - self.rate < MAX_EXCESS_OVERHEAD

    def _enough_packets(self) -> bool:
        n = len(self._packets)
        wanted = self._min_packets + (1 if n / self._frames >= MIN_MEDIA_PACKETS_ADAPTATION else 0)
        return n >= wanted


class _SenderInternals(Protocol):
    """What ChromeVideoSender drives of aiortc 1.16.0's RTCRtpSender beyond its public API: its
    name-mangled private state, and the methods `install()` replaces on the instance."""

    _RTCRtpSender__rtt: Optional[float]
    _RTCRtpSender__rtp_started: asyncio.Event
    _RTCRtpSender__rtp_exited: asyncio.Event
    _RTCRtpSender__encoder: Optional[Encoder]
    _RTCRtpSender__rtp_header_extensions_map: HeaderExtensionsMap
    _RTCRtpSender__mid: Optional[str]
    _RTCRtpSender__ntp_timestamp: int
    _RTCRtpSender__rtp_timestamp: int
    _RTCRtpSender__octet_count: int
    _RTCRtpSender__packet_count: int
    _run_rtp: Callable[[RTCRtpCodecParameters], Awaitable[None]]
    _retransmit: Callable[[int], Awaitable[None]]
    _handle_rtcp_packet: Callable[[Any], Awaitable[None]]


class ChromeVideoSender:
    """Sends one aiortc RTCRtpSender's video as Chrome does with red + ulpfec negotiated.

    `install()` replaces, on this sender instance only, what aiortc 1.16.0's RTCRtpSender
    looks up on `self`: `_run_rtp` (started by `send()` with the first codec), `_retransmit`
    (called for each NACKed sequence number) and `_handle_rtcp_packet` (wrapped: receiver
    reports' loss for the FEC rate). The loop is aiortc's (`_next_encoded_frame` packetizes,
    header extensions mid + abs-send-time, the SR counters), with its own sequence numbers
    shared by media and FEC and its own history for retransmission.
    tests/loadtest/test_video_fec_sender.py pins these internals.
    """

    def __init__(self, sender: RTCRtpSender, payload_types: VideoFecPayloadTypes, media_payload_type: int,
                 zero_from: dict[int, int]) -> None:
        self.sender = sender
        # the same object, seen through the aiortc internals this class uses (the tests pin them)
        self._internals = cast(_SenderInternals, sender)
        self.payload_types = payload_types
        self.media_payload_type = media_payload_type
        self.zero_from = zero_from  # negotiated extension id -> first byte FEC leaves out
        self.controller = ChromeFecController()
        self.generator = UlpfecGenerator()
        self.guard = ResendGuard()
        # media packets (RED) by sequence number, oldest first, with when they were sent
        self._history: dict[int, tuple[RtpPacket, float]] = {}
        self._seq = random_sequence_number()
        self._rtx_seq = random_sequence_number()
        self.media_packets = self.fec_packets = self.retransmissions = self.nacks_unanswered = 0

    def install(self) -> None:
        sender, internals = self.sender, self._internals
        setattr(sender, "_loadtest_video_fec_sender", self)  # our tag, read by video_fec_sender_of
        internals._run_rtp = self._run_rtp
        internals._retransmit = self._retransmit

        async def handle_rtcp_packet(packet: Any) -> None:
            await type(sender)._handle_rtcp_packet(sender, packet)  # the class's, hooks included
            if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                for report in packet.reports:
                    if report.ssrc == sender._ssrc:
                        self.controller.on_loss_report(time.monotonic(), report.fraction_lost / 256)

        internals._handle_rtcp_packet = handle_rtcp_packet

    @property
    def rtt_s(self) -> Optional[float]:
        return self._internals._RTCRtpSender__rtt

    # --- sending -------------------------------------------------------------------------------------

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        sender, internals = self.sender, self._internals
        internals._RTCRtpSender__rtp_started.set()
        timestamp_origin = random32()
        try:
            while True:
                if not sender.track:
                    await asyncio.sleep(0.02)
                    continue
                frame = await sender._next_encoded_frame(codec)
                if frame is None:
                    continue
                await self.send_frame(frame.payloads, uint32_add(timestamp_origin, frame.timestamp), time.monotonic())
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:  # stop() waits for the exit event below: never leave without it
            logger.exception("video FEC sender failed")
        internals._RTCRtpSender__encoder = None
        leave_rtp_loop(sender, internals._RTCRtpSender__rtp_exited)

    async def send_frame(self, payloads: list[bytes], timestamp: int, now: float) -> None:
        """One frame's VP8 payloads as RED, then the FEC it completes (if any)."""
        keyframe = vp8_is_keyframe_start(payloads[0])
        self.controller.on_frame(now, payloads, keyframe)
        self.generator.set_params(self.controller.update(now, self.rtt_s))
        extensions_map = self._internals._RTCRtpSender__rtp_header_extensions_map
        fec: list[bytes] = []
        for i, payload in enumerate(payloads):
            packet = self._packet(self.media_payload_type, timestamp, i == len(payloads) - 1, payload)
            fec += self.generator.add(zero_extensions(packet.serialize(extensions_map), self.zero_from), keyframe)
            packet.payload_type = self.payload_types.red
            packet.payload = red_wrap(self.media_payload_type, payload)
            self._remember(packet, now)
            self.media_packets += 1
            await self._send(packet)
        for payload in fec:
            self.fec_packets += 1
            await self._send(self._packet(self.payload_types.red, timestamp, False,
                                          red_wrap(self.payload_types.ulpfec, payload)))

    def _remember(self, packet: RtpPacket, now: float) -> None:
        """RtpPacketHistory (kStoreAndCull): packets are kept max(1 s, 3 x RTT), at most 600 of them."""
        self._history.pop(packet.sequence_number, None)
        self._history[packet.sequence_number] = (packet, now)
        keep_s = max(HISTORY_MIN_S, HISTORY_RTT_FACTOR * (self.rtt_s or 0.0))
        while self._history:
            oldest = next(iter(self._history))
            if len(self._history) <= HISTORY_MAX_PACKETS and now - self._history[oldest][1] <= keep_s:
                break
            del self._history[oldest]

    def _packet(self, payload_type: int, timestamp: int, marker: bool, payload: bytes) -> RtpPacket:
        packet = RtpPacket(payload_type=payload_type, marker=int(marker), sequence_number=self._seq,
                           timestamp=timestamp, ssrc=self.sender._ssrc, payload=payload)
        packet.extensions.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
        packet.extensions.mid = self._internals._RTCRtpSender__mid
        self._seq = uint16_add(self._seq, 1)
        return packet

    async def _send(self, packet: RtpPacket) -> None:
        sender, internals = self.sender, self._internals
        await sender.transport._send_rtp(packet.serialize(internals._RTCRtpSender__rtp_header_extensions_map))
        # what aiortc's loop keeps for its sender reports (the RTT comes from them)
        internals._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()
        internals._RTCRtpSender__rtp_timestamp = packet.timestamp
        internals._RTCRtpSender__octet_count += len(packet.payload)
        internals._RTCRtpSender__packet_count += 1

    async def _retransmit(self, sequence_number: int) -> None:
        """A NACKed media packet again, over rtx-for-red; FEC (never kept) and forgotten packets: nothing."""
        packet, _ = self._history.get(sequence_number, (None, 0.0))
        if packet is None:
            self.nacks_unanswered += 1
            return
        if not self.guard.allow(sequence_number, time.monotonic(), self.rtt_s):
            return
        if self.payload_types.rtx is not None:
            packet = wrap_rtx(packet, payload_type=self.payload_types.rtx, sequence_number=self._rtx_seq,
                              ssrc=self.sender._rtx_ssrc)
            self._rtx_seq = uint16_add(self._rtx_seq, 1)
        # (without rtx-for-red, libwebrtc resends the RED packet itself in the media stream)
        self.retransmissions += 1
        await self.sender.transport._send_rtp(
            packet.serialize(self._internals._RTCRtpSender__rtp_header_extensions_map))

    def counters(self) -> dict[str, Any]:
        params = self.controller.params
        return {"media_packets": self.media_packets, "fec_packets": self.fec_packets,
                "fec_per_media": round(self.fec_packets / self.media_packets, 4) if self.media_packets else None,
                "fec_rate_delta": round(params.delta / 256, 3), "fec_rate_key": round(params.key / 256, 3),
                "max_fec_frames": params.max_frames, "loss_filtered": round(self.controller.loss, 3),
                "rtt_ms": self.controller.rtt_ms, "retransmissions": self.retransmissions,
                "resends_suppressed": self.guard.suppressed, "nacks_unanswered": self.nacks_unanswered}


def video_fec_sender_of(sender: RTCRtpSender) -> Optional[ChromeVideoSender]:
    return getattr(sender, "_loadtest_video_fec_sender", None)
