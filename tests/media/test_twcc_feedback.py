"""Transport-cc feedback FCI (media/twcc_feedback.py): the draft's layout byte by byte, round
trips for loss patterns, malformed input, and the RTCP packet around it."""

from __future__ import annotations

from typing import Optional

import pytest
from aiortc.rtp import RtcpPacket, RtcpRtpfbPacket

from media.twcc_feedback import (
    FMT_TRANSPORT_CC,
    REFERENCE_MAX,
    REFERENCE_MIN,
    RTCP_RTPFB,
    TransportFeedback,
    build_fci,
    build_rtcp,
    parse_fci,
)


def chunks_of(fci: bytes) -> list[int]:
    """The packet chunks of a built FCI (as many as its chunk area holds before the deltas)."""
    feedback = parse_fci(fci)
    covered, out, pos = 0, [], 8
    while covered < len(feedback.arrivals):
        chunk = int.from_bytes(fci[pos:pos + 2], "big")
        covered += chunk & 0x1FFF if chunk < 0x8000 else 14 if chunk < 0xC000 else 7
        out.append(chunk)
        pos += 2
    return out


def round_trip(base: int, arrivals: list[Optional[int]], feedback_count: int = 7) -> TransportFeedback:
    fci = build_fci(base, arrivals, feedback_count)
    assert len(fci) % 4 == 0
    feedback = parse_fci(fci)
    assert feedback.base_sequence == base & 0xFFFF
    assert feedback.feedback_count == feedback_count & 0xFF
    assert feedback.arrivals == tuple(arrivals)
    return feedback


# --- the draft's layout, by hand ---------------------------------------------------------------

HAND_BUILT = bytes.fromhex(
    "fffa"      # base sequence number 65530
    "0016"      # packet status count 22: 65530..65535, then 0..15
    "000123"    # reference time 291 x 64 ms
    "2a"        # feedback packet count 42
    "2003"      # run length chunk: T=0, S=01 (small delta), run of 3
    "ac01"      # status vector: T=1, S=0, 1-bit symbols 1 0 1 1 0 0 0 0 0 0 0 0 0 1
    "e610"      # status vector: T=1, S=1, 2-bit symbols 2 1 2 0 1 | 0 0 (past the count)
    "0400ff"    # run: +1 ms, +0, +63.75 ms
    "08010210"  # 1-bit vector: +2 ms, +0.25 ms, +0.5 ms, +4 ms
    "0400"      # large: +1024 x 250 us = +256 ms
    "05"        # small: +1.25 ms
    "fff6"      # large, negative: -10 x 250 us = -2.5 ms
    "00"        # small: +0
    "00"        # padding to 32 bits
)


def test_a_hand_built_fci_parses_field_by_field():
    ref = 291 * 64_000
    assert parse_fci(HAND_BUILT) == TransportFeedback(
        base_sequence=65_530, reference_time_us=ref, feedback_count=42,
        arrivals=(ref + 1000, ref + 1000, ref + 64_750,  # run length chunk
                  ref + 66_750, None, ref + 67_000, ref + 67_500, *[None] * 9, ref + 71_500,  # 1-bit vector
                  ref + 327_500, ref + 328_750, ref + 326_250, None, ref + 326_250))  # 2-bit vector


def test_a_negative_reference_time_is_read_as_24_bit_twos_complement():
    fci = bytes.fromhex("0005" "0001" "ffffff" "00" "2001" "04" "00")
    assert parse_fci(fci) == TransportFeedback(5, -64_000, 0, (-63_000,))
    assert parse_fci(bytes.fromhex("0005" "0001" "800000" "00" "2001" "00" "00")).reference_time_us \
        == -(1 << 23) * 64_000


def test_symbols_past_the_count_are_ignored_even_reserved_ones():
    # 2-bit vector: 1 then six symbols past the count, the last one reserved (3)
    fci = bytes.fromhex("0000" "0001" "000000" "00" "d003" "01" "00")
    assert parse_fci(fci).arrivals == (250,)


def test_trailing_padding_after_the_deltas_is_allowed():
    assert parse_fci(HAND_BUILT + b"\x01\x02\x03\x04").arrivals == parse_fci(HAND_BUILT).arrivals


def test_a_zero_length_run_describes_nothing():
    fci = bytes.fromhex("0000" "0001" "000000" "00" "2000" "2001" "01" "00")
    assert parse_fci(fci).arrivals == (250,)


# --- round trips ------------------------------------------------------------------------------

REF = 1_000 * 64_000  # a reference time on the receiver's clock
PATTERNS: dict[str, list[Optional[int]]] = {
    "all received": [REF + 1000 * i for i in range(30)],
    "one received": [REF + 250],
    "all lost": [None] * 30,
    "alternating": [REF + 1000 * i if i % 2 else None for i in range(40)],
    "long runs": [None] * 100 + [REF + 500 * i for i in range(9000)] + [None] * 9000 + [REF + 5_000_000],
    "burst loss in between": [REF + 2000 * i if not 10 <= i < 30 else None for i in range(50)],
    "negative deltas": [REF + 64_000, REF + 10_000, None, REF + 10_000 + 8_191_750, REF + 10_000 - 250],
    "large deltas mixed in": [REF + 100_000 * (i % 3) + 250 * i if i % 4 else None for i in range(60)],
    "largest deltas": [REF, REF + 0x7FFF * 250, REF + 0x7FFF * 250 - 0x8000 * 250],
    "first packet lost": [None, None, REF + 30_000, REF + 31_000],
    "reference time negative": [-5_000_000 + 1000 * i if i % 5 else None for i in range(20)],
    "reference time at the limits": [REFERENCE_MIN * 64_000, None, REFERENCE_MIN * 64_000 + 250],
    "reference time at the top": [REFERENCE_MAX * 64_000 + 63_750, REFERENCE_MAX * 64_000 + 70_000],
}


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_patterns_round_trip(name):
    round_trip(3000, PATTERNS[name])


def test_the_reference_time_is_the_first_received_arrival_floored_to_64_ms():
    assert round_trip(0, [None, REF + 63_750, REF - 1000]).reference_time_us == REF
    assert round_trip(0, [-250, 0]).reference_time_us == -64_000
    assert round_trip(0, [None, None]).reference_time_us == 0


def test_sequence_numbers_wrap_across_65535():
    arrivals: list[Optional[int]] = [REF + 1000 * i if i != 6 else None for i in range(12)]
    feedback = round_trip(65_530, arrivals)
    by_seq = {(feedback.base_sequence + i) & 0xFFFF: t for i, t in enumerate(feedback.arrivals)}
    assert by_seq[65_535] == REF + 5000 and by_seq[0] is None and by_seq[5] == REF + 11_000


def test_base_sequence_and_feedback_count_wrap_to_their_widths():
    feedback = parse_fci(build_fci(0x1_0005, [REF], 257))
    assert (feedback.base_sequence, feedback.feedback_count) == (5, 1)


def test_arrivals_round_to_250_us_without_drift():
    arrivals: list[Optional[int]] = [REF + 333 * i + 7 for i in range(2000)]
    parsed = parse_fci(build_fci(0, arrivals, 0)).arrivals
    assert all(t is not None and abs(t - a) <= 125 for t, a in zip(parsed, arrivals) if a is not None)


# --- chunk choice -------------------------------------------------------------------------------


def test_a_long_run_is_one_run_length_chunk_split_at_8191():
    assert chunks_of(build_fci(0, [REF + 1000 * i for i in range(20)], 0)) == [0x2000 | 20]
    assert chunks_of(build_fci(0, [None] * 20_000, 0)) == [8191, 8191, 20_000 - 2 * 8191]


def test_mixed_small_deltas_and_losses_use_1_bit_vectors():
    fci = build_fci(0, [REF + 1000 * i if i % 2 else None for i in range(28)], 0)
    assert chunks_of(fci) == [0x8000 | 0b01010101010101] * 2
    assert len(fci) == 8 + 4 + 14 + 2  # 14 small deltas, 2 bytes of padding


def test_a_large_delta_needs_a_2_bit_vector():
    arrivals: list[Optional[int]] = [REF, None, REF + 100_000, REF + 1000, None, None, REF + 2000]
    # symbols 1 0 2 2 0 0 1: the delta back from +100 ms is large (negative) too
    assert chunks_of(build_fci(0, arrivals, 0)) == [0xC000 | int("1022001", 4)]


def test_a_run_of_7_before_a_large_delta_is_a_run_length_chunk():
    arrivals: list[Optional[int]] = [None] * 7 + [REF, REF - 1000] + [REF + 1000 * i for i in range(5)]
    assert chunks_of(build_fci(0, arrivals, 0))[0] == 7


# --- malformed input --------------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "header cut short": bytes.fromhex("0000000100000000")[:7],
    "packet status count 0": bytes.fromhex("0000" "0000" "000000" "00" "2001" "01" "00"),
    "no chunks": bytes.fromhex("0000" "0014" "000000" "00"),
    "chunks cover 10 of 20": bytes.fromhex("0000" "0014" "000000" "00" "200a" "0101010101010101010101"),
    "chunk cut in half": bytes.fromhex("0000" "0014" "000000" "00" "20"),
    "vectors cover 21 of 22": bytes.fromhex("0000" "0016" "000000" "00" "8000" "c000"),
    "small delta missing": bytes.fromhex("0000" "0003" "000000" "00" "2003" "0101"),
    "large delta cut in half": bytes.fromhex("0000" "0001" "000000" "00" "4001" "01"),
    "no deltas at all": bytes.fromhex("0000" "0002" "000000" "00" "2002"),
    "reserved symbol in a run": bytes.fromhex("0000" "0001" "000000" "00" "6001" "0000"),
    "reserved symbol in a 2-bit vector": bytes.fromhex("0000" "0002" "000000" "00" "dc00" "01000000"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_raises_value_error(name):
    with pytest.raises(ValueError, match="transport-cc"):
        parse_fci(MALFORMED[name])


@pytest.mark.parametrize("arrivals, why", [
    ([], "1 to 65535 packets"),
    ([None] * 65_536, "1 to 65535 packets"),
    ([REF, REF + 0x8000 * 250], "delta of 32768"),
    ([REF, REF - 0x8001 * 250], "delta of -32769"),
    ([REF, None, REF + 10_000_000], "for packet 2"),
    ([(REFERENCE_MAX + 1) * 64_000], "24 signed bits"),
    ([REFERENCE_MIN * 64_000 - 1], "24 signed bits"),
])
def test_what_cannot_be_encoded_raises_value_error(arrivals, why):
    with pytest.raises(ValueError, match=why):
        build_fci(0, arrivals, 0)


# --- the RTCP packet ----------------------------------------------------------------------------


def test_build_rtcp_is_an_rtpfb_packet_aiortc_reads():
    fci = bytes.fromhex(HAND_BUILT.hex())
    data = build_rtcp(0x11223344, 0xAABBCCDD, fci)
    assert data[0] >> 6 == 2 and not data[0] & 0x20 and data[0] & 0x1F == FMT_TRANSPORT_CC == 15
    assert data[1] == RTCP_RTPFB == 205
    assert int.from_bytes(data[2:4], "big") == len(data) // 4 - 1 == 2 + len(fci) // 4
    [packet] = RtcpPacket.parse(data)  # aiortc checks version, length and the 4-byte multiple
    assert isinstance(packet, RtcpRtpfbPacket)
    assert (packet.fmt, packet.ssrc, packet.media_ssrc) == (15, 0x11223344, 0xAABBCCDD)
    assert parse_fci(data[12:]) == parse_fci(HAND_BUILT)


def test_build_rtcp_refuses_what_it_cannot_frame():
    with pytest.raises(ValueError, match="multiple of 4"):
        build_rtcp(1, 2, b"\x00" * 10)
    with pytest.raises(ValueError, match="too long"):
        build_rtcp(1, 2, bytes(4 * 0xFFFE))
    with pytest.raises(ValueError, match="32-bit"):
        build_rtcp(1 << 32, 2, bytes(8))
    assert len(build_rtcp(1, 2, bytes(4 * 0xFFFD))) == 4 * 0x10000
