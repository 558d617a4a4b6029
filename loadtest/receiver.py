"""Receive-side instrumentation for the load-test client (one process, all participants).

aiortc's RTCRtpReceiver is kept (it parses, unwraps RTX, sends NACK/PLI and
receiver reports), but some of the names it looks up are replaced in this
process:

- `JitterBuffer` -> InstrumentedBuffer: every video packet also goes to a
  ReceiverFrameAssembler (loadtest.frames) that records when each frame became complete
  and whether its reference chain is intact; every audio packet's arrival is
  recorded. What the receiver then releases to its decoder depends on the mode:
    * "aiortc": aiortc's own jitter buffer, unchanged. It waits for the first
      packet of the next frame before releasing one, stalls on a missing packet
      until 512 packets later, then drops what it has and releases frames whose
      references are gone; it NACKs a gap when it appears and again only when a
      newer gap appears, and sends PLI only when its buffer overflows.
    * "browser": a frame buffer like libwebrtc's: a frame is released as soon as
      it and its references are complete; NACKs are retried every RTT (100 ms,
      libwebrtc's default before it has a measurement) up to 10 times
      (kMaxNackRetries); a keyframe is requested after 3 s without a decodable
      frame (kMaxWaitForFrame) and every 200 ms while one is awaited
      (kMaxWaitForKeyFrame); NACKs stop for packets older than a released frame
      (ClearUpTo). Each released frame is shown at its playout time
      (loadtest.playout: capture time + a target delay that follows the jitter
      of frames not delayed by retransmission, plus an RTT once NACKs are in
      use, as libwebrtc's timing does, never below the floor our pages' policy
      sets with jitterBufferTarget) or when it became decodable if that is
      later; freezes and glass-to-glass latency are measured on these times.
      Audio: NACKed like libwebrtc's voice engine does when the server
      negotiated it, while the packet can still be played; arrival times are
      measured against a playout deadline (no NetEq model).
  RED (loadtest.red_audio, where the answer accepted red): each block of a RED
  payload counts as an arrival of the packet it copies (a malformed payload as
  nothing), and aiortc's jitter buffer gets the primary as plain Opus. Whether
  Opus in-band FEC could stand in for a late packet is decided by the metrics.
  Video RED + ULPFEC (loadtest.red_video, where the answer accepted them), as
  libwebrtc's RtpVideoStreamReceiver2 takes it: a RED media packet is unwrapped,
  delivered, and given (in its protected form: unwrapped, mutable extensions
  zeroed) to an ULPFEC decoder (media.ulpfec); an FEC packet goes to the decoder
  and its sequence number counts as padding, so it is not NACKed and does not
  hide a frame boundary. Packets the decoder recovers are delivered like received
  ones and leave the NACK list. Retransmissions are not fed to the decoder
  (aiortc rebuilds them from RTX without the wire bytes, see media.aiortc_bridge.WirePacket); the
  NACK for a gap still goes out the moment the gap is seen.
- `get_decoder` -> MeasuringDecoder: records when each released frame reached
  the decoder thread, whether its reference chain was intact (frames released
  with a broken chain count as not delivered), and, on probe receivers, really
  decodes (aiortc's decoder) and records the decoded time.
- `NackGenerator` (browser mode only) -> RetryingNackGenerator.
- `depayload`: leaves video RED payloads whole for the buffer (and the DTLS
  transport parses into WirePackets, which keep their bytes for ULPFEC).

Frames are identified by the hash of their reassembled bytes (our SFU forwards
payloads bit-exact) or, where the server re-encodes (the MediaRelay baseline),
by the index drawn into the picture, read after decoding.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import av
from aiortc.codecs import depayload
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from loadtest.clips import frame_key, luma_of, read_marker
from loadtest.frames import CODEC_HELPERS, AssembledFrame, CodecHelpers, ReceiverFrameAssembler
from loadtest.metrics import FreezeDetector
from loadtest.playout import POLICY_INTERVAL_S, PagePlayoutPolicy, PlayoutClock
from media.aiortc_bridge import keep_wire_bytes
from media.red import RedError, parse_red
from media.ulpfec import UlpfecDecoder, UlpfecError, rtp_header_length, zero_extensions

if TYPE_CHECKING:
    from loadtest.red_audio import RedCodec
    from media.sdp_video_fec import VideoFecPayloadTypes

MODES = ("aiortc", "browser")
NACK_RETRY_S = 0.100  # libwebrtc kDefaultRttMs
NACK_MAX_RETRIES = 10  # libwebrtc kMaxNackRetries
MAX_WAIT_FOR_FRAME_S = 3.0  # libwebrtc kMaxWaitForFrame
MAX_WAIT_FOR_KEYFRAME_S = 0.2  # libwebrtc kMaxWaitForKeyFrame


@dataclass
class StreamRecord:
    """What one subscriber saw of one mid. Event lists hold [clip index, monotonic time, ...]."""

    subscriber: str
    mid: str
    kind: str
    codec: str
    probe: bool
    by_marker: bool  # identify frames by the drawn index (re-encoding server)
    keys: dict[bytes, int]
    complete: list[list] = field(default_factory=list)  # [index, t, keyframe]
    rendered: list[list] = field(default_factory=list)  # [index, t, chain_ok]
    decoded: list[list] = field(default_factory=list)  # [index, t]
    arrivals: list[list] = field(default_factory=list)  # audio: [index, t] or [index, t, 1] for a RED copy
    red: bool = False  # the answer accepted red (audio: loadtest.red_audio; video, with ulpfec: loadtest.red_video)
    red_packets: int = 0
    red_malformed: int = 0  # RED packets dropped as unusable
    fec_packets: int = 0  # video: ULPFEC packets received
    fec_recovered: int = 0  # video: media packets the ULPFEC decoder rebuilt
    fec_malformed: int = 0  # video: FEC payloads the decoder rejected
    decode_errors: int = 0
    keyframe_requests: int = 0
    playout_floor: list[list] = field(default_factory=list)  # video: [t, ms] each time the page policy moved it
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def index_of(self, data: bytes) -> int:
        return self.keys.get(frame_key(data), -1)

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {"subscriber": self.subscriber, "mid": self.mid, "kind": self.kind, "probe": self.probe,
                    "complete": list(self.complete), "rendered": list(self.rendered),
                    "decoded": list(self.decoded), "arrivals": list(self.arrivals),
                    "decode_errors": self.decode_errors, "keyframe_requests": self.keyframe_requests,
                    "playout_floor": list(self.playout_floor),
                    "red": self.red, "red_packets": self.red_packets, "red_malformed": self.red_malformed,
                    **({"fec_packets": self.fec_packets, "fec_recovered": self.fec_recovered,
                        "fec_malformed": self.fec_malformed} if self.kind == "video" else {})}


@dataclass
class Settings:
    mode: str = "aiortc"
    # browser mode: the page's RTCRtpReceiver.jitterBufferTarget; None: our pages' policy (PagePlayoutPolicy)
    jitter_buffer_target_s: Optional[float] = None


SETTINGS = Settings()


# --- the buffer aiortc's receiver talks to ------------------------------------------------------------


class _ObservingAssembler(ReceiverFrameAssembler):
    def __init__(self, record: StreamRecord, is_keyframe) -> None:
        super().__init__(is_keyframe)
        self.record = record

    def on_complete(self, frame: AssembledFrame) -> None:
        self.record.complete.append([self.record.index_of(frame.data), frame.completed_at, frame.keyframe])


class FrameBundle:
    """Several frames released at once (aiortc's receiver hands one object per packet to the decoder)."""

    def __init__(self, frames: list[JitterFrame]) -> None:
        self.frames = frames
        self.timestamp = frames[0].timestamp
        self.data = b""


class InstrumentedBuffer:
    """Stands in for aiortc's JitterBuffer; `attach()` gives it its stream once the track is known.

    A packet's `_data` is its depayloaded payload, which aiortc's receiver sets on every packet
    without declaring it (aiortc ignores that type too): hence the `type: ignore[attr-defined]`s.
    """

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        self.is_video = is_video
        self.stock = JitterBuffer(capacity=capacity, prefetch=prefetch, is_video=is_video)
        self.record: Optional[StreamRecord] = None
        self.assembler: Optional[_ObservingAssembler] = None
        self._helpers: Optional[CodecHelpers] = None
        self.mode = SETTINGS.mode
        now = time.monotonic()
        self._last_progress = now
        self._keyframe_required = True
        self._last_request = float("-inf")
        self.nack: Optional[RetryingNackGenerator] = None  # browser mode, video: set by equip()
        # browser mode: when each released frame is shown, and the page's playout policy
        fixed = SETTINGS.jitter_buffer_target_s
        self.playout = PlayoutClock(min_delay_s=fixed or 0.0)
        self.policy = PagePlayoutPolicy() if fixed is None else None
        self._freezes = FreezeDetector()
        self._frozen_s = 0.0  # freezes ended since the policy last looked
        self._policy_at = now + POLICY_INTERVAL_S
        self.red: Optional[RedCodec] = None  # audio: set once red is negotiated (loadtest.red_audio)
        # video: set once red + ulpfec are negotiated (loadtest.red_video)
        self.video_fec: Optional[VideoFecPayloadTypes] = None
        self._media_codecs: dict[int, RTCRtpCodecParameters] = {}  # what RED may wrap, by payload type
        self._zero_from: dict[int, int] = {}  # extension id -> first byte FEC does not cover
        self._fec_decoder: Optional[UlpfecDecoder] = None

    @property
    def capacity(self) -> int:
        return self.stock.capacity

    def attach(self, record: StreamRecord) -> None:
        self.record = record
        record.red = self.red is not None or self.video_fec is not None
        if self.is_video:
            self._helpers = CODEC_HELPERS[record.codec]
            self.assembler = _ObservingAssembler(record, self._helpers.is_keyframe)

    def use_red(self, red: RedCodec) -> None:
        """red was negotiated: unwrap its payload type from now on."""
        self.red = red
        if self.record is not None:
            self.record.red = True

    def use_video_fec(self, payload_types: VideoFecPayloadTypes, media_codecs: dict[int, RTCRtpCodecParameters],
                      zero_from: dict[int, int]) -> None:
        """Video red + ulpfec were negotiated: unwrap RED and decode FEC from now on.

        `media_codecs`: the payload types RED may carry; `zero_from`: the header extensions
        (id -> from which byte) FEC leaves out, see media.ulpfec.zero_extensions.
        """
        self.video_fec = payload_types
        self._media_codecs = dict(media_codecs)
        self._zero_from = dict(zero_from)
        if self.record is not None:
            self.record.red = True

    def add(self, packet: RtpPacket) -> tuple[bool, Optional[Any]]:
        record = self.record
        now = time.monotonic()
        if record is None:
            return self.stock.add(packet)
        if not self.is_video:
            if self.red is not None and packet.payload_type == self.red.red_pt:
                return self._add_red(packet, now)
            record.arrivals.append([record.index_of(packet._data), now])  # type: ignore[attr-defined]
            return self.stock.add(packet)
        assembler = self.assembler
        assert assembler is not None  # attach() makes it with the record of a video stream
        padding, packets = None, [packet]
        if self.video_fec is not None and packet.payload_type == self.video_fec.red:
            padding, packets = self._unwrap_video_red(packet)
        if self.mode == "browser":
            released = [] if padding is None else assembler.add_padding(padding, now)
            for plain in packets:
                released += self._assemble(plain, now)
            return self._browser_release(released, now)
        if padding is not None:
            assembler.add_padding(padding, now)
        pli, frames = False, []
        for plain in packets:
            self._assemble(plain, now)
            wants_keyframe, frame = self.stock.add(plain)
            pli = pli or wants_keyframe
            if frame is not None:
                index = record.index_of(frame.data)
                # aiortc's buffer can release a frame missing packets (after it dropped some): not decodable either
                ok = assembler.decodable_timestamp(frame.timestamp) and (index >= 0 or record.by_marker)
                setattr(frame, "loadtest", (record, index, ok))  # our tag on aiortc's frame, for MeasuringDecoder
                frames.append(frame)
        if pli:
            record.keyframe_requests += 1
        return pli, (frames[0] if len(frames) == 1 else FrameBundle(frames)) if frames else None

    def _assemble(self, packet: RtpPacket, now: float) -> list[AssembledFrame]:
        assembler, helpers = self.assembler, self._helpers
        assert assembler is not None and helpers is not None  # attach() sets both for a video stream
        data = packet._data  # type: ignore[attr-defined]
        return assembler.add(packet.sequence_number, packet.timestamp, bool(packet.marker), data, now,
                             starts_frame=helpers.starts_frame(packet.payload),
                             picture_id=helpers.picture_id(packet.payload))

    # --- video RED + ULPFEC ---------------------------------------------------------------------------

    def _unwrap_video_red(self, packet: RtpPacket) -> tuple[Optional[int], list[RtpPacket]]:
        """A RED packet as libwebrtc takes it: (its sequence number if it counts as padding: FEC or
        empty; the media packets to deliver: its own, then any the FEC decoder recovered)."""
        record, fec = self.record, self.video_fec
        assert record is not None and fec is not None  # add() unwraps only for an attached stream with FEC
        record.red_packets += 1
        payload = packet.payload
        if not payload:
            return packet.sequence_number, []  # padding
        block = payload[0]
        if block & 0x80 or (block != fec.ulpfec and block not in self._media_codecs):
            return self._malformed_red(packet)  # libwebrtc takes one block only, of a known payload type
        decoder = self._decoder_for(packet.ssrc)
        if block == fec.ulpfec:
            record.fec_packets += 1
            try:
                recovered = decoder.add_fec(payload[1:])
            except UlpfecError:
                record.fec_malformed += 1
                recovered = []
            return packet.sequence_number, self._recovered(recovered)
        media = self._plain(packet, block, payload[1:])
        if media is None:
            return self._malformed_red(packet)
        return None, [media] + self._recovered(self._protect(packet, block, decoder))

    def _malformed_red(self, packet: RtpPacket) -> tuple[Optional[int], list[RtpPacket]]:
        assert self.record is not None  # only for an attached stream's packets
        self.record.red_malformed += 1
        if self.nack is not None:  # dropped before libwebrtc's NACK module hears of it: still missing
            self.nack.forget(packet.sequence_number)
        return None, []

    def _decoder_for(self, ssrc: int) -> UlpfecDecoder:
        if self._fec_decoder is None or self._fec_decoder.ssrc != ssrc:
            self._fec_decoder = UlpfecDecoder(ssrc)
        return self._fec_decoder

    def _plain(self, packet: RtpPacket, payload_type: int, payload: bytes) -> Optional[RtpPacket]:
        """The media packet RED carried, depayloaded as aiortc's receiver would; None if unparseable."""
        codec = self._media_codecs.get(payload_type)
        if codec is None:
            return None
        plain = RtpPacket(payload_type=payload_type, marker=packet.marker, sequence_number=packet.sequence_number,
                          timestamp=packet.timestamp, ssrc=packet.ssrc, payload=payload)
        plain.csrc, plain.extensions, plain.padding_size = packet.csrc, packet.extensions, packet.padding_size
        try:
            plain._data = depayload(codec, payload) if payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return None
        return plain

    def _protect(self, packet: RtpPacket, media_pt: int, decoder: UlpfecDecoder) -> list[bytes]:
        """Give the decoder the packet as FEC protected it; returns what that let it recover."""
        raw = getattr(packet, "raw", None)
        if not raw:
            return []  # rebuilt by aiortc from RTX: libwebrtc keeps retransmissions out of FEC too
        try:
            header = rtp_header_length(raw)
            # without the RED header byte, with the media payload type (marker bit kept)
            unwrapped = raw[:1] + bytes([raw[1] & 0x80 | media_pt]) + raw[2:header] + raw[header + 1:]
            return decoder.add_media(zero_extensions(unwrapped, self._zero_from))
        except UlpfecError:
            return []

    def _recovered(self, recovered: list[bytes]) -> list[RtpPacket]:
        """Recovered packets, as received ones; each leaves the NACK list (libwebrtc: is_recovered)."""
        record = self.record
        assert record is not None  # only for an attached stream's packets
        out = []
        for data in recovered:
            record.fec_recovered += 1
            try:
                parsed = RtpPacket.parse(data)
            except ValueError:
                continue
            plain = self._plain(parsed, parsed.payload_type, parsed.payload)  # a recovered RED packet: dropped
            if plain is None:
                continue
            if self.nack is not None:
                self.nack.recovered(plain.sequence_number)
            out.append(plain)
        return out

    def _add_red(self, packet: RtpPacket, now: float) -> tuple[bool, Optional[Any]]:
        """A RED payload: every block is an arrival of the packet it copies; the primary goes on as Opus.

        A redundant copy arriving is that packet arriving (the metrics take the
        first arrival of each send, so a copy of a packet already here changes nothing).
        """
        record, red = self.record, self.red
        assert record is not None and red is not None  # add() calls this for an attached stream with red
        record.red_packets += 1
        try:
            blocks = parse_red(packet._data)  # type: ignore[attr-defined]
        except RedError:
            record.red_malformed += 1
            return False, None  # unusable: the packet counts as lost
        for block in blocks[:-1]:
            record.arrivals.append([record.index_of(block.data), now, 1])
        primary = blocks[-1].data
        record.arrivals.append([record.index_of(primary), now])
        plain = copy.copy(packet)
        plain.payload_type = red.opus_pt
        plain.payload = plain._data = primary  # type: ignore[attr-defined]
        return self.stock.add(plain)

    def _browser_release(self, released: list[AssembledFrame], now: float) -> tuple[bool, Optional[Any]]:
        record = self.record
        assert record is not None  # add() releases only for an attached stream
        if released:
            self._last_progress = now
            if any(f.keyframe for f in released):
                self._keyframe_required = False
        wait = MAX_WAIT_FOR_KEYFRAME_S if self._keyframe_required else MAX_WAIT_FOR_FRAME_S
        pli = False
        if now - self._last_progress >= wait and now - self._last_request >= MAX_WAIT_FOR_KEYFRAME_S:
            pli = True
            self._last_request = now
            self._keyframe_required = True
            record.keyframe_requests += 1
        if not released:
            return pli, None
        if self.nack is not None:
            self.nack.clear_up_to(released[-1].last_seq & 0xFFFF)
        frames = []
        for f in released:
            jf = JitterFrame(data=f.data, timestamp=f.timestamp)
            shown = self.playout.render_time(f.timestamp, now, f.delayed_by_retransmission, f.completed_at)
            setattr(jf, "loadtest", (record, record.index_of(f.data), True, shown))  # read by MeasuringDecoder
            frames.append(jf)
            self._frozen_s += self._freezes.add(shown) or 0.0
        if self.policy is not None and now >= self._policy_at:
            floor = self.policy.update(now, self._frozen_s)
            if floor != self.playout.min_delay_s:
                self.playout.min_delay_s = floor
                record.playout_floor.append([now, round(floor * 1000)])
            self._frozen_s, self._policy_at = 0.0, now + POLICY_INTERVAL_S
        return pli, frames[0] if len(frames) == 1 else FrameBundle(frames)


# --- the decoder aiortc's receiver thread calls ------------------------------------------------------


class DeliveredFrame:
    """What the measuring decoder hands to the track instead of pixels."""

    __slots__ = ("index", "width", "height", "keyframe")

    def __init__(self, index: int, width: int = 0, height: int = 0) -> None:
        self.index, self.width, self.height = index, width, height


class MeasuringDecoder:
    def __init__(self, codec, real_factory) -> None:
        self.codec = codec
        self.kind = codec.mimeType.split("/")[0].lower()
        self._real_factory = real_factory
        self._real: Optional[Decoder] = None

    def decode(self, encoded_frame) -> list:
        frames = encoded_frame.frames if isinstance(encoded_frame, FrameBundle) else [encoded_frame]
        out = []
        for frame in frames:
            out.extend(self._one(frame))
        return out

    def _one(self, frame) -> list:
        tag = getattr(frame, "loadtest", None)
        if tag is None:  # audio, or a stream not attached: count, decode nothing
            return [DeliveredFrame(-1)]
        record, index, chain_ok = tag[:3]
        now = time.monotonic()
        # browser mode: a frame is shown at its playout time, not when it became decodable
        shown_at = tag[3] if len(tag) > 3 else None
        if shown_at is not None:
            now = max(now, shown_at)
        if not (record.probe or record.by_marker):
            with record.lock:
                record.rendered.append([index, now, chain_ok])
            return [DeliveredFrame(index)]
        if self._real is None:
            self._real = self._real_factory(self.codec)
        try:
            pictures = self._real.decode(frame)
        except av.FFmpegError:
            with record.lock:
                record.decode_errors += 1
                record.rendered.append([index, now, False])
            raise  # aiortc's worker logs it and sends PLI
        decoded_at = time.monotonic() if shown_at is None else max(time.monotonic(), shown_at)
        out = []
        for picture in pictures:
            assert isinstance(picture, av.VideoFrame)  # only video reaches the real decoder (tag above)
            shown = index
            if record.by_marker:
                marked = read_marker(luma_of(picture))
                shown = -1 if marked is None else marked
            with record.lock:
                record.rendered.append([shown, now, chain_ok])
                record.decoded.append([shown, decoded_at])
            out.append(DeliveredFrame(shown, picture.width, picture.height))
        return out


# --- NACK like a browser ----------------------------------------------------------------------------


class RetryingNackGenerator:
    """Drop-in for aiortc's NackGenerator: `add()` True means "send a NACK for `missing` now".

    New gaps are NACKed at once; each missing packet again every NACK_RETRY_S, at
    most NACK_MAX_RETRIES times; then it is given up. `clear_up_to()` stops asking
    for packets older than a frame that was released (libwebrtc's
    NackRequester::ClearUpTo after a decoded frame): after a keyframe the packets
    of the broken chain are no longer wanted.

    Audio uses it too when the server negotiated "nack" for Opus, as libwebrtc's
    voice engine does (NetEq's NackTracker): `max_age_s` then bounds the retries to
    packets that can still be played out.
    """

    def __init__(self, max_age_s: Optional[float] = None) -> None:
        self.max_seq: Optional[int] = None
        self._tries: dict[int, tuple[int, float]] = {}  # seq -> (tries, last sent)
        self._first_seen: dict[int, float] = {}
        self.max_age_s = max_age_s
        self.missing: list[int] = []
        self.given_up = 0

    def clear_up_to(self, seq: int) -> None:
        for lost in [s for s in self._tries if ((seq - s) & 0xFFFF) < 0x8000]:
            del self._tries[lost]
            self._first_seen.pop(lost, None)

    def recovered(self, seq: int) -> None:
        """FEC rebuilt this packet: stop asking for it (libwebrtc's NackRequester, is_recovered)."""
        self._tries.pop(seq, None)
        self._first_seen.pop(seq, None)

    def forget(self, seq: int) -> None:
        """This packet arrived unusable (malformed RED): it is missing again, asked for with the next
        packet, as libwebrtc does for a gap its NACK module sees then."""
        if seq not in self._tries:
            self._tries[seq] = (0, float("-inf"))
            self._first_seen[seq] = time.monotonic()

    def add(self, packet: RtpPacket) -> bool:
        seq, now = packet.sequence_number, time.monotonic()
        if self.max_seq is None:
            self.max_seq = seq
            return False
        ahead = (seq - self.max_seq) & 0xFFFF
        due: list[int] = []
        if 0 < ahead < 0x8000:
            for k in range(1, min(ahead, 1000)):
                lost = (self.max_seq + k) & 0xFFFF
                self._tries[lost] = (1, now)
                self._first_seen[lost] = now
                due.append(lost)
            self.max_seq = seq
        else:
            self._tries.pop(seq, None)
            self._first_seen.pop(seq, None)
        for lost, (tries, last) in list(self._tries.items()):
            if lost in due or now - last < NACK_RETRY_S:
                continue
            too_old = self.max_age_s is not None and now + NACK_RETRY_S - self._first_seen[lost] > self.max_age_s
            if tries >= NACK_MAX_RETRIES or too_old:
                del self._tries[lost]
                del self._first_seen[lost]
                self.given_up += 1
                continue
            self._tries[lost] = (tries + 1, now)
            due.append(lost)
        self.missing = due
        return bool(due)


# --- installing -------------------------------------------------------------------------------------


def install(mode: str, jitter_buffer_target_s: Optional[float] = None) -> None:
    """Patch aiortc's receiver module in this process (the load-test client only)."""
    import aiortc.rtcrtpreceiver as receiver_module

    if mode not in MODES:
        raise ValueError(f"receiver mode must be one of {MODES}")
    SETTINGS.mode = mode
    SETTINGS.jitter_buffer_target_s = jitter_buffer_target_s
    real_factory = getattr(receiver_module, "_loadtest_real_get_decoder", receiver_module.get_decoder)
    setattr(receiver_module, "_loadtest_real_get_decoder", real_factory)  # kept for a later install()

    def measuring_decoder(codec: RTCRtpCodecParameters) -> MeasuringDecoder:
        return MeasuringDecoder(codec, real_factory)

    # Deliberately replaces names aiortc's receiver looks up in its module with duck-typed stand-ins
    # (not subclasses: the buffer releases tagged frames, the decoder hands on DeliveredFrames).
    receiver_module.JitterBuffer = InstrumentedBuffer  # type: ignore[misc,assignment]
    receiver_module.get_decoder = measuring_decoder  # type: ignore[assignment]
    if mode == "browser":
        receiver_module.NackGenerator = RetryingNackGenerator  # type: ignore[misc,assignment]
    _route_rtx_by_ssrc()
    keep_wire_bytes()  # ULPFEC needs the bytes as sent (media.aiortc_bridge.WirePacket)
    _keep_red_payloads(receiver_module)


def _keep_red_payloads(receiver_module) -> None:
    """aiortc depayloads each packet by its payload type's codec before the buffer sees it. Video red is
    registered as a copy of the video codec (loadtest.red_video.RedVideoCodec, so the decoder thread keeps
    one decoder): leave its payloads whole, the buffer unwraps (and counts) them itself."""
    from loadtest.red_video import RedVideoCodec

    real = getattr(receiver_module, "_loadtest_real_depayload", receiver_module.depayload)
    receiver_module._loadtest_real_depayload = real

    def keep_red(codec: RTCRtpCodecParameters, payload: bytes) -> bytes:
        return payload if isinstance(codec, RedVideoCodec) else real(codec, payload)

    receiver_module.depayload = keep_red


def _route_rtx_by_ssrc() -> None:
    """Fix an aiortc 1.16 client bug that would hide every downlink retransmission.

    aiortc's RTP router registers a receiver's media SSRC but not its RTX SSRC;
    an RTX packet is then routed by payload type only when exactly one receiver
    has that payload type. A subscriber in a three-party room has two video
    receivers with the same RTX payload type, so aiortc discards every RTX
    packet the server sends it. Browsers route RTX by its SSRC (the FID group
    the offer declares); so does this client.
    """
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    original = RTCDtlsTransport._register_rtp_receiver
    if getattr(original, "_loadtest_hook", False):
        return

    def register(self: RTCDtlsTransport, receiver, parameters) -> None:
        original(self, receiver, parameters)
        for encoding in parameters.encodings:
            if encoding.rtx is not None and encoding.rtx.ssrc:
                self._rtp_router.ssrc_table[encoding.rtx.ssrc] = receiver

    setattr(register, "_loadtest_hook", True)  # marks the patch as installed (checked above)
    RTCDtlsTransport._register_rtp_receiver = register  # type: ignore[method-assign]  # deliberate patch of aiortc


def equip(receiver, buffer: InstrumentedBuffer, audio_deadline_s: float, rtt_s: Optional[float] = None) -> None:
    """Browser mode: audio NACK (negotiated by the server), NACK cleanup after released frames, and the
    path's RTT for the playout delay (a browser that also sends measures it from its receiver reports)."""
    if SETTINGS.mode != "browser":
        return
    if buffer.is_video:
        buffer.nack = getattr(receiver, "_RTCRtpReceiver__nack_generator", None)
        if rtt_s is not None:
            buffer.playout.rtt_s = rtt_s
    else:
        receiver._RTCRtpReceiver__nack_generator = RetryingNackGenerator(max_age_s=audio_deadline_s)


def buffer_of(receiver) -> Optional[InstrumentedBuffer]:
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    return buffer if isinstance(buffer, InstrumentedBuffer) else None
