"""RFC 5109 ULPFEC for RTP video, level 0 only, as browsers send it inside RED.

One FEC payload protects up to 48 media packets of one stream: every protected
field is the XOR of the same field over the protected packets, so one packet
missing from the set is the XOR of the FEC and the packets that did arrive.

Layout, what libwebrtc puts after the 1-byte RED header (F=0, ulpfec payload type):

    0                   1                   2                   3
    |E|L|P|X|  CC   |M| PT recovery |          SN base              |
    |                       TS recovery                             |
    |       length recovery         |      protection length        |
    |  mask (16 bits, or 48 when L=1) ...                           |
    |  level-0 payload: XOR of bytes[12:] of the protected packets  |

The protected unit is the whole media packet as sent without RED (header with the
media payload type, CSRCs, extensions, payload, padding); the length recovery is
over len - 12. SN base is the lowest protected sequence number, mask bit i (most
significant first) marks SN base + i. The SSRC is not carried: with ULPFEC in RED
the FEC shares the media SSRC and sequence-number space.

Header extensions written after the FEC was computed differ between what was
protected and what arrives. A libwebrtc receiver zeroes abs-send-time, toffset,
transport-cc and video-timing (from its pacer field on) in media before FEC, so FEC
for a browser must protect packets with those zeroed. A libwebrtc sender protects
the first three before its pacer writes them (still zero) but transport-cc after,
so media from a browser needs only those three zeroed. `zero_extensions` does both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from media.seqnum import SEQ_MOD, seq_add, seq_diff

RTP_HEADER_SIZE = 12
FEC_HEADER_SIZE = 10
SHORT_MASK_BITS = 16
LONG_MASK_BITS = 48
MAX_PROTECTED_SPAN = LONG_MASK_BITS
# First byte of libwebrtc's video-timing extension that its pacer fills in after FEC.
VIDEO_TIMING_MUTABLE_FROM = 7
# A sequence-number jump this large is a restarted stream, not loss or reordering.
RESTART_GAP = 0x3FFF


# Extensions a libwebrtc receiver zeroes in media packets before FEC (from which byte on):
# senders write them after protecting the packet.
MUTABLE_EXTENSIONS = {
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 0,
    "urn:ietf:params:rtp-hdrext:toffset": 0,
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01": 0,
    "http://www.webrtc.org/experiments/rtp-hdrext/video-timing": VIDEO_TIMING_MUTABLE_FROM,
}


class UlpfecError(ValueError):
    """A malformed FEC payload or RTP packet; the caller drops (and counts) it."""


def rtp_header_length(packet: bytes) -> int:
    """Bytes before the payload (fixed header, CSRCs, extension).

    Raises UlpfecError unless the packet is RTP version 2 whose header and padding fit in it.
    """
    if len(packet) < RTP_HEADER_SIZE or packet[0] >> 6 != 2:
        raise UlpfecError("not an RTP version 2 packet")
    length = RTP_HEADER_SIZE + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if length + 4 > len(packet):
            raise UlpfecError("RTP header extension header past the packet")
        length += 4 + 4 * int.from_bytes(packet[length + 2:length + 4], "big")
    if length > len(packet):
        raise UlpfecError("RTP header past the packet")
    if packet[0] & 0x20 and (packet[-1] == 0 or length + packet[-1] > len(packet)):
        raise UlpfecError("RTP padding inconsistent with the packet length")
    return length


def zero_extensions(packet: bytes, zero_from: Mapping[int, int]) -> bytes:
    """A copy of `packet` whose RFC 8285 extensions with an id in `zero_from` are zeroed
    from that byte of their data on: 0 for all of it, VIDEO_TIMING_MUTABLE_FROM for
    video-timing. Which ids to pass: see the module docstring.
    """
    end = rtp_header_length(packet)
    if not packet[0] & 0x10 or not zero_from:
        return packet
    start = RTP_HEADER_SIZE + 4 * (packet[0] & 0x0F)
    profile = int.from_bytes(packet[start:start + 2], "big")
    one_byte = profile == 0xBEDE
    if not one_byte and profile & 0xFFF0 != 0x1000:
        return packet  # not RFC 8285: nothing we can identify
    out = bytearray(packet)
    pos = start + 4
    while pos < end:
        if out[pos] == 0:  # padding between elements
            pos += 1
            continue
        if one_byte:
            ext_id, length = out[pos] >> 4, (out[pos] & 0x0F) + 1
            if ext_id == 15:  # reserved: stop parsing, as RFC 8285 says
                break
            pos += 1
        else:
            if pos + 2 > end:
                break
            ext_id, length = out[pos], out[pos + 1]
            pos += 2
        if pos + length > end:
            break
        if ext_id in zero_from:
            first = min(zero_from[ext_id], length)
            out[pos + first:pos + length] = bytes(length - first)
        pos += length
    return bytes(out)


def zeroed_extensions(extensions: Iterable[RTCRtpHeaderExtensionParameters]) -> dict[int, int]:
    """Negotiated extension id -> the first byte of it that FEC does not cover (for zero_extensions)."""
    return {ext.id: MUTABLE_EXTENSIONS[ext.uri] for ext in extensions if ext.uri in MUTABLE_EXTENSIONS}


def _seq(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


def _ssrc(packet: bytes) -> int:
    return int.from_bytes(packet[8:12], "big")


def _header_bits(packet: bytes) -> int:
    """P, X, CC, M, PT as one 14-bit field: what the FEC header recovers of bytes 0-1."""
    return (packet[0] & 0x3F) << 8 | packet[1]


def _body(packet: bytes, width: int) -> int:
    """bytes[12:] as an integer, zero-padded on the right to `width` bytes."""
    return int.from_bytes(packet[RTP_HEADER_SIZE:], "big") << 8 * (width - len(packet) + RTP_HEADER_SIZE)


@dataclass(frozen=True, slots=True)
class FecPacket:
    """A parsed level-0 ULPFEC payload."""

    seq_base: int
    mask_bits: int  # 16 or 48
    mask: int  # bit (mask_bits - 1 - i) set: seq_base + i is protected
    header_recovery: int  # P, X, CC, M, PT: see _header_bits
    timestamp_recovery: int
    length_recovery: int
    payload: bytes  # protection length bytes
    protected: tuple[int, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        seqs = tuple(seq_add(self.seq_base, i) for i in range(self.mask_bits)
                     if self.mask >> (self.mask_bits - 1 - i) & 1)
        object.__setattr__(self, "protected", seqs)

    def serialize(self) -> bytes:
        first = (0x40 if self.mask_bits == LONG_MASK_BITS else 0) | self.header_recovery >> 8 & 0x3F
        return (bytes((first, self.header_recovery & 0xFF))
                + self.seq_base.to_bytes(2, "big")
                + self.timestamp_recovery.to_bytes(4, "big")
                + self.length_recovery.to_bytes(2, "big")
                + len(self.payload).to_bytes(2, "big")
                + self.mask.to_bytes(self.mask_bits // 8, "big")
                + self.payload)


def parse_fec(payload: bytes) -> FecPacket:
    """The FEC payload (after the RED header). Raises UlpfecError if malformed."""
    if len(payload) < FEC_HEADER_SIZE:
        raise UlpfecError("FEC header truncated")
    if payload[0] & 0x80:
        raise UlpfecError("FEC header E bit set (reserved)")
    mask_bits = LONG_MASK_BITS if payload[0] & 0x40 else SHORT_MASK_BITS
    data_start = FEC_HEADER_SIZE + 2 + mask_bits // 8
    if len(payload) < data_start:
        raise UlpfecError("ULP level-0 header or mask truncated")
    protection_length = int.from_bytes(payload[10:12], "big")
    if data_start + protection_length > len(payload):
        raise UlpfecError("protection length past the FEC payload")
    if data_start + protection_length < len(payload):
        # Bytes past level 0 would be a level-1 header: nobody sends it and we can't use it.
        raise UlpfecError("data past the level-0 payload (level > 0)")
    mask = int.from_bytes(payload[12:data_start], "big")
    if not mask:
        raise UlpfecError("FEC mask protects nothing")
    return FecPacket(
        seq_base=int.from_bytes(payload[2:4], "big"),
        mask_bits=mask_bits,
        mask=mask,
        header_recovery=_header_bits(payload),
        timestamp_recovery=int.from_bytes(payload[4:8], "big"),
        length_recovery=int.from_bytes(payload[8:10], "big"),
        payload=bytes(payload[data_start:]),
    )


def build_fec(packets: Sequence[bytes]) -> bytes:
    """One FEC payload protecting `packets`: serialized media packets of one SSRC whose
    sequence numbers span at most 48 (across the wrap). Raises UlpfecError otherwise.
    """
    if not packets:
        raise UlpfecError("nothing to protect")
    for packet in packets:
        rtp_header_length(packet)
        if packet[8:12] != packets[0][8:12]:
            raise UlpfecError("protected packets of different SSRCs")
    seqs = [_seq(p) for p in packets]
    base = min(seqs, key=lambda s: seq_diff(s, seqs[0]))
    offsets = [(s - base) % SEQ_MOD for s in seqs]
    if len(set(offsets)) != len(offsets):
        raise UlpfecError("a sequence number is protected twice")
    if max(offsets) >= MAX_PROTECTED_SPAN:
        raise UlpfecError("protected sequence numbers span more than 48")
    mask_bits = SHORT_MASK_BITS if max(offsets) < SHORT_MASK_BITS else LONG_MASK_BITS
    width = max(len(p) for p in packets) - RTP_HEADER_SIZE
    if width > 0xFFFF:
        raise UlpfecError("packet too long for the 16-bit length fields")
    header = timestamp = length = body = 0
    for packet in packets:
        header ^= _header_bits(packet)
        timestamp ^= int.from_bytes(packet[4:8], "big")
        length ^= len(packet) - RTP_HEADER_SIZE
        body ^= _body(packet, width)
    return FecPacket(
        seq_base=base,
        mask_bits=mask_bits,
        mask=sum(1 << (mask_bits - 1 - o) for o in offsets),
        header_recovery=header,
        timestamp_recovery=timestamp,
        length_recovery=length,
        payload=body.to_bytes(width, "big"),
    ).serialize()


class UlpfecEncoder:
    """When to protect: one FEC payload per `group` media packets, sooner at a frame's
    end (marker bit) so a frame's losses never wait for the next frame's packets.

    `group` may change at any time (the SFU derives it from measured loss); it applies
    from the next packet. Feed packets in send order, in their protected form.
    """

    def __init__(self, group: int = 4) -> None:
        self._group = 1
        self.group = group
        self._packets: list[bytes] = []

    @property
    def group(self) -> int:
        return self._group

    @group.setter
    def group(self, value: int) -> None:
        if not 1 <= value <= MAX_PROTECTED_SPAN:
            raise ValueError(f"group must be 1..{MAX_PROTECTED_SPAN}, got {value}")
        self._group = value

    def add(self, packet: bytes) -> list[bytes]:
        """FEC payloads due now: usually none or one, two when `packet` cannot join the
        open group (other SSRC, not newer, span past 48) and also closes its own."""
        rtp_header_length(packet)
        out = []
        if self._packets and not self._fits(packet):
            out += self.flush()
        self._packets.append(packet)
        if len(self._packets) >= self._group or packet[1] & 0x80:
            out += self.flush()
        return out

    def flush(self) -> list[bytes]:
        """The FEC payload for the open group, if any (e.g. when the stream pauses)."""
        packets, self._packets = self._packets, []
        return [build_fec(packets)] if packets else []

    def _fits(self, packet: bytes) -> bool:
        first, last = self._packets[0], self._packets[-1]
        return (packet[8:12] == first[8:12] and seq_diff(_seq(packet), _seq(last)) > 0
                and seq_diff(_seq(packet), _seq(first)) < MAX_PROTECTED_SPAN)


@dataclass(slots=True, eq=False)
class _PendingFec:
    fec: FecPacket
    newest: int  # highest protected sequence number


class UlpfecDecoder:
    """Recovers lost media packets of one stream from ULPFEC payloads.

    Media packets (received or recovered) are kept for `window` sequence numbers behind
    the newest; an FEC payload waits until all but one of its packets are known, up to
    `max_pending_fec` of them, and is dropped once it has done its work, protects only
    packets out of the window, or proves inconsistent with the packets it protects.
    """

    def __init__(self, ssrc: int, window: int = 256, max_pending_fec: int = 64) -> None:
        if not MAX_PROTECTED_SPAN <= window <= RESTART_GAP:
            raise ValueError(f"window must be {MAX_PROTECTED_SPAN}..{RESTART_GAP}, got {window}")
        if max_pending_fec < 1:
            raise ValueError(f"max_pending_fec must be at least 1, got {max_pending_fec}")
        self.ssrc = ssrc
        self.window = window
        self.max_pending_fec = max_pending_fec
        self._packets: dict[int, bytes] = {}  # in the order stored
        self._pending: list[_PendingFec] = []
        self._newest: Optional[int] = None

    @property
    def stored_packets(self) -> int:
        return len(self._packets)

    @property
    def pending_fec(self) -> int:
        return len(self._pending)

    def reset(self) -> None:
        self._packets.clear()
        self._pending.clear()
        self._newest = None

    def add_media(self, packet: bytes) -> list[bytes]:
        """Store a received media packet (in protected form, see zero_extensions).

        Returns packets it let pending FEC recover. Don't feed RTX retransmissions:
        libwebrtc leaves them out, as their extensions may differ from the original.
        """
        rtp_header_length(packet)
        if _ssrc(packet) != self.ssrc:
            raise UlpfecError(f"media SSRC {_ssrc(packet)} is not the protected {self.ssrc}")
        seq = _seq(packet)
        if self._newest is not None:
            ahead = seq_diff(seq, self._newest)
            if abs(ahead) > RESTART_GAP:
                self.reset()
            elif ahead <= -self.window or seq in self._packets:
                return []  # too old to matter, or already known
        self._store(seq, packet)
        recovered = self._recover()
        self._prune()
        return recovered

    def add_fec(self, payload: bytes) -> list[bytes]:
        """Take an FEC payload; returns the full RTP packets it (and pending FEC) recovered.

        Raises UlpfecError, changing nothing, if the payload is malformed.
        """
        fec = parse_fec(payload)
        newest = fec.protected[-1]
        if self._newest is not None and seq_diff(self._newest, newest) >= self.window:
            return []  # its packets are gone from the window: it can never help
        self._pending.append(_PendingFec(fec, newest))
        recovered = self._recover()
        self._prune()
        return recovered

    def _store(self, seq: int, packet: bytes) -> None:
        self._packets[seq] = packet
        if self._newest is None or seq_diff(seq, self._newest) > 0:
            self._newest = seq

    def _recover(self) -> list[bytes]:
        # A recovered packet can complete another FEC's set: repeat until nothing changes.
        recovered: list[bytes] = []
        progress = True
        while progress:
            progress = False
            for pending in list(self._pending):
                missing = [s for s in pending.fec.protected if s not in self._packets]
                if len(missing) > 1:
                    continue
                self._pending.remove(pending)
                if not missing:
                    continue  # everything arrived: nothing left to do
                if self._newest is not None and seq_diff(self._newest, missing[0]) >= self.window:
                    continue  # out of the window: it may have arrived and been let go
                packet = self._rebuild(pending.fec, missing[0])
                if packet is None:
                    continue  # inconsistent with what we hold: drop it, as libwebrtc does
                self._store(missing[0], packet)
                recovered.append(packet)
                progress = True
        return recovered

    def _rebuild(self, fec: FecPacket, seq: int) -> Optional[bytes]:
        width = len(fec.payload)
        header, timestamp, length = fec.header_recovery, fec.timestamp_recovery, fec.length_recovery
        body = int.from_bytes(fec.payload, "big")
        for other in fec.protected:
            if other == seq:
                continue
            packet = self._packets[other]
            if len(packet) - RTP_HEADER_SIZE > width:
                return None  # longer than anything this FEC protected: not the same packet
            header ^= _header_bits(packet)
            timestamp ^= int.from_bytes(packet[4:8], "big")
            length ^= len(packet) - RTP_HEADER_SIZE
            body ^= _body(packet, width)
        if length > width:
            return None
        # Past the recovered length every protected byte was zero padding, so a nonzero
        # byte there means some packet or the FEC is not what was protected.
        tail_bits = 8 * (width - length)
        if body & ((1 << tail_bits) - 1):
            return None
        packet = (bytes((0x80 | header >> 8 & 0x3F, header & 0xFF))
                  + seq.to_bytes(2, "big")
                  + timestamp.to_bytes(4, "big")
                  + self.ssrc.to_bytes(4, "big")
                  + (body >> tail_bits).to_bytes(length, "big"))
        try:
            rtp_header_length(packet)
        except UlpfecError:
            return None
        return packet

    def _prune(self) -> None:
        if self._newest is not None:
            newest = self._newest
            # Dicts keep insertion order, nearly sequence order: the oldest sit in front.
            while self._packets and seq_diff(newest, next(iter(self._packets))) >= self.window:
                del self._packets[next(iter(self._packets))]
            if len(self._packets) > self.window:  # late arrivals left old packets behind newer ones
                self._packets = {s: p for s, p in self._packets.items() if seq_diff(newest, s) < self.window}
            self._pending = [p for p in self._pending if seq_diff(newest, p.newest) < self.window]
        del self._pending[:-self.max_pending_fec]
