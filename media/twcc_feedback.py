"""Transport-wide congestion control feedback (RTCP RTPFB, PT=205, FMT=15): its FCI, both ways.

Our downlink estimate needs each packet's arrival time at the browser, not just a REMB
number; Chromium reports them in this feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01, section 3.1). `parse_fci` reads what a subscriber sends; `build_fci` and
`build_rtcp` write the same format (tests, and a receiver side if we ever need one).

Layout of the FCI: base sequence (16 bits), packet status count (16), reference time (24,
signed, 64 ms units), feedback packet count (8), packet chunks (16 bits each), receive
deltas (250 us units; 1 byte unsigned or 2 bytes signed), zero padding to 32 bits.

Status symbols are kept as a str of digits "0"-"3" while decoding and encoding: Python's
int(..., 2) / int(..., 4) and format(..., "b") then pack and unpack whole chunks, so no
loop runs per bit; the one loop left runs per packet, for its delta.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

RTCP_RTPFB = 205
FMT_TRANSPORT_CC = 15
DELTA_TICK_US = 250
REFERENCE_TICK_US = 64_000

HEADER_SIZE = 8
MAX_STATUS_COUNT = 0xFFFF
MAX_RUN_LENGTH = 0x1FFF
SMALL_DELTA_MAX = 0xFF
LARGE_DELTA_MIN, LARGE_DELTA_MAX = -0x8000, 0x7FFF
REFERENCE_MIN, REFERENCE_MAX = -(1 << 23), (1 << 23) - 1

NOT_RECEIVED, SMALL_DELTA, LARGE_DELTA, RESERVED = "0", "1", "2", "3"

# A 2-bit status vector's 7 symbols: the first 4 from bits 13-6, the last 3 from bits 5-0.
_TWO_BIT_HIGH = tuple("".join("0123"[(v >> s) & 3] for s in (6, 4, 2, 0)) for v in range(256))
_TWO_BIT_LOW = tuple("".join("0123"[(v >> s) & 3] for s in (4, 2, 0)) for v in range(64))
# One run of equal symbols, matched in C rather than counted symbol by symbol.
_RUN = re.compile("0+|1+|2+")


@dataclass(frozen=True)
class TransportFeedback:
    base_sequence: int
    """16-bit transport-wide sequence number of the first packet described."""
    reference_time_us: int
    """The 24-bit signed reference time times 64 ms, in microseconds."""
    feedback_count: int
    """8-bit feedback packet count."""
    arrivals: tuple[Optional[int], ...]
    """One per packet from base_sequence on ((base_sequence + i) & 0xFFFF): arrival time in
    microseconds on the receiver's clock, None when not received."""


def parse_fci(fci: bytes) -> TransportFeedback:
    """The feedback in `fci`, the RTPFB payload after its two SSRCs. Malformed or truncated
    input raises ValueError; bytes after the last delta (padding) are ignored."""
    size = len(fci)
    if size < HEADER_SIZE:
        raise ValueError(f"transport-cc FCI is {size} bytes, shorter than its {HEADER_SIZE}-byte header")
    base_sequence = fci[0] << 8 | fci[1]
    count = fci[2] << 8 | fci[3]
    if count == 0:
        raise ValueError("transport-cc FCI has a packet status count of 0")
    reference = fci[4] << 16 | fci[5] << 8 | fci[6]
    reference -= (reference & 0x800000) << 1  # 24-bit two's complement
    feedback_count = fci[7]

    parts: list[str] = []
    covered = 0
    pos = HEADER_SIZE
    while covered < count:
        if pos + 2 > size:
            raise ValueError(f"transport-cc packet chunks describe {covered} of {count} packets before the data ends")
        chunk = fci[pos] << 8 | fci[pos + 1]
        pos += 2
        if not chunk & 0x8000:  # run length: symbol in bits 14-13, length in 12-0
            part = "0123"[chunk >> 13] * (chunk & MAX_RUN_LENGTH)
        elif not chunk & 0x4000:  # status vector of fourteen 1-bit symbols
            part = format(chunk & 0x3FFF, "014b")
        else:  # status vector of seven 2-bit symbols
            part = _TWO_BIT_HIGH[(chunk >> 6) & 0xFF] + _TWO_BIT_LOW[chunk & 0x3F]
        parts.append(part)
        covered += len(part)
    # the last chunk may describe more packets than the count: those symbols mean nothing
    symbols = "".join(parts)[:count]
    if RESERVED in symbols:
        raise ValueError(f"transport-cc status symbol 3 (reserved) for packet {symbols.index(RESERVED)}")
    small, large = symbols.count(SMALL_DELTA), symbols.count(LARGE_DELTA)
    needed = small + 2 * large
    if pos + needed > size:
        raise ValueError(f"transport-cc FCI has {size - pos} bytes of receive deltas, {needed} needed "
                         f"({small} small, {large} large)")

    reference_us = reference * REFERENCE_TICK_US
    arrivals: list[Optional[int]] = []
    append = arrivals.append
    ticks = 0  # 250 us units since the reference time
    for symbol in symbols:
        if symbol == SMALL_DELTA:
            ticks += fci[pos]
            pos += 1
        elif symbol == LARGE_DELTA:
            delta = fci[pos] << 8 | fci[pos + 1]
            ticks += delta - ((delta & 0x8000) << 1)
            pos += 2
        else:
            append(None)
            continue
        append(reference_us + ticks * DELTA_TICK_US)
    return TransportFeedback(base_sequence, reference_us, feedback_count, tuple(arrivals))


def build_fci(base_sequence: int, arrivals: Sequence[Optional[int]], feedback_count: int) -> bytes:
    """The FCI describing `arrivals` (microseconds on the receiver's clock, None = lost), the
    first for `base_sequence`. The reference time is the first arrival floored to 64 ms; each
    arrival is rounded to 250 us (from the reference, so rounding never accumulates).

    base_sequence and feedback_count are taken modulo 2**16 and 2**8 (both wrap by design).
    ValueError: no arrivals or more than 65535; the reference time outside 24 signed bits; a
    delta from the previous received packet outside a signed 16-bit count of 250 us (the
    caller splits the feedback there).
    """
    count = len(arrivals)
    if not 0 < count <= MAX_STATUS_COUNT:
        raise ValueError(f"transport-cc feedback describes 1 to {MAX_STATUS_COUNT} packets, not {count}")
    first = next((arrival for arrival in arrivals if arrival is not None), None)
    reference = 0 if first is None else first // REFERENCE_TICK_US
    if not REFERENCE_MIN <= reference <= REFERENCE_MAX:
        raise ValueError(f"transport-cc reference time {reference} x 64 ms does not fit in 24 signed bits")
    reference_us = reference * REFERENCE_TICK_US

    symbols: list[str] = []
    deltas = bytearray()
    last = 0  # ticks of the previous received packet, the reference's at first
    for index, arrival in enumerate(arrivals):
        if arrival is None:
            symbols.append(NOT_RECEIVED)
            continue
        ticks = (arrival - reference_us + DELTA_TICK_US // 2) // DELTA_TICK_US
        delta = ticks - last
        last = ticks
        if 0 <= delta <= SMALL_DELTA_MAX:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        elif LARGE_DELTA_MIN <= delta <= LARGE_DELTA_MAX:
            symbols.append(LARGE_DELTA)
            deltas += delta.to_bytes(2, "big", signed=True)
        else:
            raise ValueError(f"transport-cc delta of {delta} x 250 us for packet {index} "
                             "does not fit in a signed 16-bit count")

    out = bytearray(HEADER_SIZE)
    out[0:2] = (base_sequence & 0xFFFF).to_bytes(2, "big")
    out[2:4] = count.to_bytes(2, "big")
    out[4:7] = (reference & 0xFFFFFF).to_bytes(3, "big")
    out[7] = feedback_count & 0xFF
    for chunk in _chunks("".join(symbols)):
        out += chunk.to_bytes(2, "big")
    out += deltas
    out += bytes(-len(out) % 4)
    return bytes(out)


def _chunks(symbols: str) -> list[int]:
    """Packet chunks for `symbols`, greedily: a run-length chunk where it covers at least as
    much as a status vector could, otherwise the widest vector the next symbols allow."""
    chunks: list[int] = []
    size = len(symbols)
    i = 0
    while i < size:
        match = _RUN.match(symbols, i, min(size, i + MAX_RUN_LENGTH))
        assert match is not None  # symbols holds only "0"-"2", so a run starts at every position
        run = match.end() - i
        window = symbols[i:i + 14]
        wide = LARGE_DELTA in window  # a large delta among the next 14 rules out the 1-bit vector
        if run >= 14 or i + run == size or (run >= 7 and wide):
            chunks.append(int(symbols[i]) << 13 | run)
            i += run
        elif not wide:
            chunks.append(0x8000 | int(window.ljust(14, "0"), 2))
            i += 14
        else:
            chunks.append(0xC000 | int(symbols[i:i + 7].ljust(7, "0"), 4))
            i += 7
    return chunks


def build_rtcp(sender_ssrc: int, media_ssrc: int, feedback: bytes) -> bytes:
    """A whole RTCP transport-cc packet: V=2, no padding bit, FMT=15, PT=205, its length in
    32-bit words minus one, the two SSRCs, then `feedback` (an FCI from build_fci)."""
    if len(feedback) % 4:
        raise ValueError(f"transport-cc FCI of {len(feedback)} bytes is not a multiple of 4")
    words = 2 + len(feedback) // 4  # after the 4-byte header
    if words > 0xFFFF:
        raise ValueError(f"transport-cc FCI of {len(feedback)} bytes is too long for one RTCP packet")
    for name, ssrc in (("sender", sender_ssrc), ("media", media_ssrc)):
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise ValueError(f"{name} SSRC {ssrc} is not a 32-bit value")
    return (bytes((0x80 | FMT_TRANSPORT_CC, RTCP_RTPFB)) + words.to_bytes(2, "big")
            + sender_ssrc.to_bytes(4, "big") + media_ssrc.to_bytes(4, "big") + bytes(feedback))
