"""Transport-wide congestion control (transport-cc) on the load-test client's receive side, as Chrome does it.

Our server offers transport-cc on every section it sends on (media/sdp_transport_cc.py):
the transport-wide sequence number header extension and `a=rtcp-fb:<pt> transport-cc`.
Chromium keeps both in its answer, then reports when each packet arrived in transport-cc
feedback (RTCP RTPFB, FMT 15); the server's downlink estimate is built from those reports.
aiortc drops the extension from its answer and sends no such feedback, so:

- `add_transport_cc_to_answer` writes the extension (with the offer's id) and the transport-cc
  feedback lines back into aiortc's answer (`answer_with_transport_cc` wraps createAnswer, like
  loadtest.red_audio.answer_with_red);
- `TransportFeedbackGenerator` is libwebrtc's receive side of it
  (TransportSequenceNumberFeedbackGenerator, formerly RemoteEstimatorProxy), on one DTLS
  transport (max-bundle: every section of the peer connection): every unprotected RTP
  packet's transport-wide sequence number (RFC 8285 one- or two-byte header extensions,
  unwrapped to 64 bits) and arrival time are recorded, and every 100 ms (libwebrtc's
  default interval) one feedback covers the packets from the first not yet reported up to
  the highest received; gaps are reported lost. It is split where a receive delta would
  not fit in signed 16 bits of 250 us, or after 1000 received packets.

Arrival times are the transport's event-loop time when aiortc hands the packet on after
SRTP (loadtest.impaired_transport delivers downlink datagrams as they leave the emulated
link, so that is the impaired arrival), in microseconds since the generator started: the
24-bit reference time of the feedback then never overflows in a run.

Late packets, as libwebrtc: a packet older than the window still to report (it arrived
after a feedback had reported it lost, or reordered across a feedback) moves the window's
start back to it, so the next feedback covers it again together with every packet after it
(those already reported are reported again with their arrival times; packets whose
arrival record was dropped, 500 ms after all was reported, are reported lost). A packet
more than 32768 behind the highest is ignored, and a duplicate arrival of a packet already
recorded changes nothing (libwebrtc would move the window back for it as well; SRTP's
replay check keeps duplicates from getting here anyway).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import unpack_header_extensions

from media.rtp_writer import TRANSPORT_CC_URI
from media.sdp_transport_cc import EXTMAP, TRANSPORT_CC_FEEDBACK, transport_cc_id
from media.sdp_tweaks import join_sections, section_mid, split_sections
from media.twcc_feedback import DELTA_TICK_US, REFERENCE_TICK_US, build_fci, build_rtcp

logger = logging.getLogger(__name__)

FEEDBACK_INTERVAL_S = 0.1  # libwebrtc's default send interval (kDefaultInterval)
BACK_WINDOW_US = 500_000  # arrival records kept this long once reported (libwebrtc's kBackWindow)
MAX_RECEIVED_PER_FEEDBACK = 1000
MAX_SEQUENCE_SPAN = 1 << 15  # a packet further behind the highest is ignored (libwebrtc's map size)
LARGE_DELTA_MIN, LARGE_DELTA_MAX = -0x8000, 0x7FFF



# --- the answer ---------------------------------------------------------------------------------------


def offered_transport_cc(offer_sdp: str) -> dict[str, tuple[int, Optional[set[int]]]]:
    """mid -> (the extension id, the payload types with transport-cc feedback; None: `*`) for each offer
    section carrying both the transport-wide sequence number extension and transport-cc feedback."""
    found: dict[str, tuple[int, Optional[set[int]]]] = {}
    for section in split_sections(offer_sdp)[1]:
        mid = section_mid(section)
        ext_id = transport_cc_id(section)
        feedback = [m.group(1) for line in section if (m := TRANSPORT_CC_FEEDBACK.fullmatch(line))]
        if mid is not None and ext_id is not None and 0 < ext_id < 256 and feedback:
            found[mid] = (ext_id, None if "*" in feedback else {int(pt) for pt in feedback})
    return found


def add_transport_cc_to_answer(answer_sdp: str, offer_sdp: str) -> tuple[str, dict[str, int]]:
    """The answer with transport-cc accepted, as Chromium answers, wherever the offer had it.

    Each answer section whose offer section carried the extension and transport-cc feedback
    gets `a=extmap:<the offer's id> <uri>` (after its other extmaps; no direction) and `a=rtcp-fb:<pt> transport-cc`
    (after the rtpmap) for each of its payload types the offer gave that feedback. Returns the
    answer and mid -> extension id for the sections that now have both. Rejected sections (port
    0), sections whose payload types got no feedback, and sections using the offer's id for
    another extension are left alone.
    """
    offered = offered_transport_cc(offer_sdp)
    session, sections = split_sections(answer_sdp)
    accepted: dict[str, int] = {}
    edited: list[list[str]] = []
    for section in sections:
        mid = section_mid(section)
        fields = section[0].split()
        if mid in offered and len(fields) > 3 and fields[1] != "0":
            ext_id, feedback_pts = offered[mid]
            result = _accept(section, fields, ext_id, feedback_pts)
            if result is not None:
                section = result
                accepted[mid] = ext_id
        edited.append(section)
    return join_sections(session, edited), accepted


def _accept(section: list[str], fields: list[str], ext_id: int,
            feedback_pts: Optional[set[int]]) -> Optional[list[str]]:
    ids = {int(m.group(1)): m.group(2) for line in section if (m := EXTMAP.fullmatch(line))}
    if ids.get(ext_id, TRANSPORT_CC_URI) != TRANSPORT_CC_URI:
        return None
    formats = [int(f) for f in fields[3:] if f.isdigit()]
    pts = [pt for pt in formats if feedback_pts is None or pt in feedback_pts]
    lines = list(section)
    added = False
    for pt in pts:
        at = next((i for i, line in enumerate(lines) if line.startswith(f"a=rtpmap:{pt} ")), None)
        if at is None:
            continue
        if f"a=rtcp-fb:{pt} transport-cc" not in lines:
            lines.insert(at + 1, f"a=rtcp-fb:{pt} transport-cc")
        added = True
    if not added:
        return None
    if ext_id not in ids:
        last_extmap = max((i for i, line in enumerate(lines) if line.startswith("a=extmap:")), default=None)
        first_rtpmap = next((i for i, line in enumerate(lines) if line.startswith("a=rtpmap:")), len(lines))
        lines.insert(last_extmap + 1 if last_extmap is not None else first_rtpmap,
                     f"a=extmap:{ext_id} {TRANSPORT_CC_URI}")
    return lines


def answer_with_transport_cc(pc: RTCPeerConnection, offer_sdp: Callable[[], str], accepted: dict[str, int]
                             ) -> Callable[[], Awaitable[RTCSessionDescription]]:
    """A createAnswer for `pc` that accepts transport-cc like Chromium and sends its feedback.

    It wraps whatever createAnswer `pc` has (loadtest.red_audio's and the others'). `accepted`
    collects mid -> the negotiated extension id. A feedback generator is installed on the DTLS
    transport of the accepted sections (once; it acts when media arrives, and stops when the
    transport or `pc` closes); `feedback_generators(pc)` finds it.
    """
    create_answer = pc.createAnswer

    @pc.on("signalingstatechange")
    @pc.on("connectionstatechange")
    def stop_feedback() -> None:
        # close() says "closed" before it stops anything: no feedback is sent while it closes
        if pc.signalingState == "closed" or pc.connectionState == "failed":
            for generator in feedback_generators(pc):
                generator.stop()

    async def create() -> RTCSessionDescription:
        answer = await create_answer()
        sdp, mids = add_transport_cc_to_answer(answer.sdp, offer_sdp())
        if not mids:
            return answer
        accepted.update(mids)
        transceivers = pc.getTransceivers()
        sender_ssrc = transceivers[0].sender._ssrc  # the peer connection's first local SSRC, fixed
        for transceiver in transceivers:
            ext_id = mids.get(transceiver.mid) if transceiver.mid is not None else None
            if ext_id is not None:
                install_feedback(transceiver.receiver.transport, sender_ssrc).ext_id = ext_id
        return RTCSessionDescription(sdp=sdp, type=answer.type)

    return create


# --- the feedback -------------------------------------------------------------------------------------


def transport_sequence_number(data: bytes, ext_id: int) -> Optional[int]:
    """The 16-bit transport-wide sequence number in RTP packet `data` under header extension `ext_id`
    (RFC 8285, one-byte or two-byte form, read by aiortc), or None (no extension, not that id, malformed)."""
    if len(data) < 12 or data[0] >> 6 != 2 or not data[0] & 0x10:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if pos + 4 > len(data):
        return None
    profile, words = struct.unpack_from("!HH", data, pos)
    value = data[pos + 4:pos + 4 + 4 * words]
    if len(value) < 4 * words:
        return None
    try:
        extensions = unpack_header_extensions(profile, value)
    except ValueError:
        return None
    found = next((x_value for x_id, x_value in extensions if x_id == ext_id), None)
    return int.from_bytes(found, "big") if found is not None and len(found) == 2 else None


class TransportFeedbackGenerator:
    """libwebrtc's periodic transport-cc feedback for the RTP arriving on one DTLS transport.

    `on_packet` records an arrival; `take_feedback` builds the RTCP packets for everything not yet
    reported; `send_feedback` sends them with `transport._send_rtp` (looked up at each send: the
    uplink impairment wraps it). The periodic task starts with the first packet recorded and ends
    with `stop()` / `close()` (installed: also when the transport or its peer connection closes).
    """

    def __init__(self, transport: Any, sender_ssrc: int, ext_id: Optional[int] = None,
                 interval_s: float = FEEDBACK_INTERVAL_S, loop: Optional[asyncio.AbstractEventLoop] = None) -> None:
        self.transport = transport
        self.sender_ssrc = sender_ssrc
        self.ext_id = ext_id
        self.interval_s = interval_s
        self._loop = loop
        self._epoch = loop.time() if loop is not None else 0.0
        self._arrivals: dict[int, int] = {}  # unwrapped sequence -> arrival (us); insertion = arrival order
        self._last_seq16: Optional[int] = None
        self._last_unwrapped = 0
        self._start: Optional[int] = None  # first sequence not yet reported
        self._end = 0  # highest received + 1
        self._media_ssrc = 0
        self._feedback_count = 0
        self._task: Optional[asyncio.Task] = None
        self.closed = False
        # counters
        self.packets = 0  # RTP packets carrying the extension (first arrivals)
        self.feedbacks = 0
        self.reported = 0  # status entries sent (a packet reported twice counts twice)
        self.lost_reported = 0
        self.late = 0  # arrived behind the window still to report: reported (again) from there
        self.ignored = 0  # duplicates and packets too far behind
        self.send_errors = 0

    # entry points

    def now_us(self) -> int:
        assert self._loop is not None, "a generator made without a loop is fed arrival times"
        return round((self._loop.time() - self._epoch) * 1e6)

    def on_rtp(self, data: bytes) -> None:
        """An unprotected RTP packet arrived now (the transport hook)."""
        if self.ext_id is not None and not self.closed:
            self.on_packet(data, self.now_us())

    def on_packet(self, data: bytes, arrival_us: int) -> None:
        """Record an RTP packet's arrival (microseconds on this receiver's clock)."""
        ext_id = self.ext_id
        seq16 = transport_sequence_number(data, ext_id) if ext_id is not None else None
        if seq16 is None:
            return
        self._media_ssrc = int.from_bytes(data[8:12], "big")
        seq = self._unwrap(seq16)
        if seq in self._arrivals or self._end - seq > MAX_SEQUENCE_SPAN:
            self.ignored += 1
            return
        if self._start is not None and self._start >= self._end:  # all reported: forget old arrivals
            self._cull(arrival_us - BACK_WINDOW_US)
        self._arrivals[seq] = arrival_us
        self.packets += 1
        if self._start is None:
            self._start = seq
        elif seq < self._start:
            self._start = seq
            self.late += 1
        self._end = max(self._end, seq + 1)
        if self._task is None and self._loop is not None and not self.closed:
            self._task = self._loop.create_task(self._run())

    def _unwrap(self, seq16: int) -> int:
        if self._last_seq16 is None:
            self._last_seq16, self._last_unwrapped = seq16, seq16
            return seq16
        diff = (seq16 - self._last_seq16) & 0xFFFF
        if diff >= 0x8000:
            diff -= 0x10000
        unwrapped = self._last_unwrapped + diff
        if diff > 0:  # against the highest seen: a late packet does not move the reference back
            self._last_seq16, self._last_unwrapped = seq16, unwrapped
        return unwrapped

    def _cull(self, before_us: int) -> None:
        arrivals = self._arrivals
        old = []
        for seq, arrival in arrivals.items():
            if arrival >= before_us:
                break
            old.append(seq)
        for seq in old:
            del arrivals[seq]

    def take_feedback(self) -> list[bytes]:
        """RTCP transport-cc packets for everything received and not yet reported (none: nothing new)."""
        out: list[bytes] = []
        if self._start is None:
            return out
        arrivals = self._arrivals
        seq, end = self._start, self._end
        while seq < end:
            cut = self._batch_end(seq, end)
            statuses = [arrivals.get(s) for s in range(seq, cut)]
            try:
                fci = build_fci(seq & 0xFFFF, statuses, self._feedback_count)
            except ValueError:  # not expected: _batch_end keeps within build_fci's limits
                logger.debug("transport-cc feedback for %d..%d not built", seq, cut, exc_info=True)
                seq = cut
                continue
            out.append(build_rtcp(self.sender_ssrc, self._media_ssrc, fci))
            self._feedback_count = (self._feedback_count + 1) & 0xFF
            self.feedbacks += 1
            self.reported += len(statuses)
            self.lost_reported += statuses.count(None)
            seq = cut
        self._start = seq
        return out

    def _batch_end(self, seq: int, end: int) -> int:
        """Where the feedback starting at `seq` ends (exclusive): after its last received packet that
        fits (receive deltas as build_fci computes them, within signed 16 bits; at most 1000)."""
        arrivals = self._arrivals
        reference = None
        last = received = 0
        cut = seq + 1
        for s in range(seq, end):
            arrival = arrivals.get(s)
            if arrival is None:
                continue
            if reference is None:
                reference = arrival // REFERENCE_TICK_US * REFERENCE_TICK_US
            ticks = (arrival - reference + DELTA_TICK_US // 2) // DELTA_TICK_US
            if received and (received >= MAX_RECEIVED_PER_FEEDBACK
                             or not LARGE_DELTA_MIN <= ticks - last <= LARGE_DELTA_MAX):
                break
            last = ticks
            received += 1
            cut = s + 1
        return cut

    async def send_feedback(self) -> None:
        for packet in self.take_feedback():
            try:
                await self.transport._send_rtp(packet)
            except ConnectionError:  # not connected (yet, or any more)
                self.send_errors += 1

    async def _run(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.interval_s)
            await self.send_feedback()

    # the transport

    def install(self) -> None:
        """Hook the transport's handler of unprotected RTP, and stop when the transport closes."""
        transport = self.transport
        original = transport._handle_rtp_data

        async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
            self.on_rtp(data)
            await original(data, arrival_time_ms=arrival_time_ms)

        # deliberately wraps aiortc's internal handler on this one transport (called with keywords)
        transport._handle_rtp_data = handle_rtp_data

        @transport.on("statechange")
        def on_statechange() -> None:
            if transport.state in ("closed", "failed"):
                self.stop()

    def stop(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def counters(self) -> dict[str, Any]:
        return {"ext_id": self.ext_id, "packets": self.packets, "feedbacks": self.feedbacks,
                "reported": self.reported, "lost_reported": self.lost_reported, "late": self.late,
                "ignored": self.ignored, "send_errors": self.send_errors}


def install_feedback(transport: Any, sender_ssrc: int) -> TransportFeedbackGenerator:
    """The transport's feedback generator, installed on first use."""
    existing = getattr(transport, "_loadtest_transport_feedback", None)
    if isinstance(existing, TransportFeedbackGenerator):
        return existing
    generator = TransportFeedbackGenerator(transport, sender_ssrc, loop=asyncio.get_running_loop())
    generator.install()
    setattr(transport, "_loadtest_transport_feedback", generator)  # our tag on aiortc's object, read back above
    return generator


def feedback_generators(pc: Optional[RTCPeerConnection]) -> list[TransportFeedbackGenerator]:
    """The feedback generators on `pc`'s transports (one with max-bundle; none without transport-cc)."""
    found: list[TransportFeedbackGenerator] = []
    for transceiver in pc.getTransceivers() if pc is not None else []:
        generator = getattr(transceiver.receiver.transport, "_loadtest_transport_feedback", None)
        if isinstance(generator, TransportFeedbackGenerator) and generator not in found:
            found.append(generator)
    return found
