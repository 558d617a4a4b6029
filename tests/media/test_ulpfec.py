"""ULPFEC (RFC 5109, level 0): what is lost is rebuilt byte for byte, or nothing is returned."""

from __future__ import annotations

import random

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media.red import build_red, parse_red
from media.ulpfec import (
    VIDEO_TIMING_MUTABLE_FROM,
    UlpfecDecoder,
    UlpfecEncoder,
    UlpfecError,
    build_fec,
    parse_fec,
    rtp_header_length,
    zero_extensions,
)

SSRC = 0x1234ABCD
VP8_PT, RED_PT, ULPFEC_PT = 96, 116, 117
ABS_SEND_TIME_ID, TWCC_ID, MID_ID = 2, 3, 4

EXTENSIONS = HeaderExtensionsMap()
EXTENSIONS.configure(RTCRtpParameters(headerExtensions=[
    RTCRtpHeaderExtensionParameters(
        id=ABS_SEND_TIME_ID, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"),
    RTCRtpHeaderExtensionParameters(
        id=TWCC_ID, uri="http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"),
    RTCRtpHeaderExtensionParameters(id=MID_ID, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
]))


def media(seq: int, rng: random.Random, *, marker: bool = False, timestamp: int = 90_000,
          length: int | None = None, extensions: bool = False) -> bytes:
    packet = RtpPacket(payload_type=VP8_PT, sequence_number=seq % 65536, timestamp=timestamp,
                       ssrc=SSRC, marker=int(marker),
                       payload=rng.randbytes(length if length is not None else rng.randint(1, 1100)))
    if extensions:
        packet.extensions.abs_send_time = rng.getrandbits(24)
        packet.extensions.transport_sequence_number = rng.getrandbits(16)
        packet.extensions.mid = "0"
    return packet.serialize(EXTENSIONS)


def hand_built(seq: int, rng: random.Random) -> bytes:
    """CC=2, X=1 (one-byte extension, one 3-byte element and a pad byte), P=1 with 4 bytes, M=1."""
    header = bytes((0x80 | 0x20 | 0x10 | 2, 0x80 | VP8_PT)) + seq.to_bytes(2, "big") \
        + (123456).to_bytes(4, "big") + SSRC.to_bytes(4, "big")
    csrcs = (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    extension = b"\xbe\xde\x00\x01" + bytes((0x52,)) + b"abc"  # id 5, 3 bytes: exactly one word
    return header + csrcs + extension + rng.randbytes(37) + b"\x00\x00\x00\x04"


def group(first_seq: int, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    packets = [media(first_seq + i, rng, extensions=i % 2 == 0, timestamp=90_000 + 3000 * (i // 3),
                     marker=i % 3 == 2) for i in range(count)]
    packets[1] = hand_built((first_seq + 1) % 65536, rng)
    return packets


def seq_of(packet: bytes) -> int:
    return int.from_bytes(packet[2:4], "big")


def test_the_hand_built_packet_is_what_it_claims():
    packet = hand_built(7, random.Random(1))
    parsed = RtpPacket.parse(packet)
    assert parsed.csrc == [1, 2] and packet[20:22] == b"\xbe\xde"
    assert parsed.padding_size == 4 and parsed.marker == 1
    assert rtp_header_length(packet) == 12 + 8 + 8


def test_fec_payload_layout():
    packets = group(1000, 5, seed=1)
    payload = build_fec(packets)
    fec = parse_fec(payload)
    assert fec.seq_base == 1000 and fec.mask_bits == 16 and fec.protected == (1000, 1001, 1002, 1003, 1004)
    assert payload[0] & 0xC0 == 0  # E=0, L=0
    assert int.from_bytes(payload[12:14], "big") == 0b11111 << 11
    width = max(len(p) for p in packets) - 12
    assert int.from_bytes(payload[10:12], "big") == width == len(fec.payload)
    assert len(payload) == 10 + 4 + width
    length_recovery = 0
    for p in packets:
        length_recovery ^= len(p) - 12
    assert fec.length_recovery == length_recovery
    assert fec.serialize() == payload


@pytest.mark.parametrize("fec_first", [False, True])
def test_every_single_loss_in_a_group_is_recovered_bit_exact(fec_first):
    packets = group(5000, 8, seed=2)
    payload = build_fec(packets)
    for lost in range(len(packets)):
        decoder = UlpfecDecoder(SSRC)
        recovered = decoder.add_fec(payload) if fec_first else []
        for i, packet in enumerate(packets):
            if i != lost:
                recovered += decoder.add_media(packet)
        if not fec_first:
            recovered += decoder.add_fec(payload)
        assert recovered == [packets[lost]]
        assert decoder.pending_fec == 0
        parsed = RtpPacket.parse(recovered[0], EXTENSIONS)
        original = RtpPacket.parse(packets[lost], EXTENSIONS)
        assert (parsed.sequence_number, parsed.timestamp, parsed.marker, parsed.payload) == \
            (original.sequence_number, original.timestamp, original.marker, original.payload)


def test_a_single_protected_packet_comes_back_from_the_fec_alone():
    packet = media(9, random.Random(3), marker=True)
    assert UlpfecDecoder(SSRC).add_fec(build_fec([packet])) == [packet]


def test_two_losses_in_one_group_recover_nothing_until_one_arrives():
    packets = group(200, 6, seed=4)
    decoder = UlpfecDecoder(SSRC)
    for i in (0, 1, 3, 5):
        assert decoder.add_media(packets[i]) == []
    assert decoder.add_fec(build_fec(packets)) == []
    assert decoder.pending_fec == 1
    assert decoder.add_media(packets[4]) == [packets[2]]  # late arrival leaves one missing
    assert decoder.pending_fec == 0


def test_two_overlapping_fec_packets_recover_two_losses():
    packets = group(300, 6, seed=5)
    wide, narrow = build_fec(packets), build_fec(packets[3:])
    decoder = UlpfecDecoder(SSRC)
    for i in (0, 2, 4, 5):
        decoder.add_media(packets[i])
    assert decoder.add_fec(wide) == []  # 301 and 303 missing
    # narrow rebuilds 303, which leaves wide one short: 301
    assert decoder.add_fec(narrow) == [packets[3], packets[1]]


def test_media_arriving_after_its_fec():
    packets = group(400, 4, seed=6)
    decoder = UlpfecDecoder(SSRC)
    assert decoder.add_fec(build_fec(packets)) == []
    assert decoder.add_media(packets[3]) == []
    assert decoder.add_media(packets[0]) == []
    assert decoder.add_media(packets[2]) == [packets[1]]
    assert decoder.add_media(packets[1]) == []  # the original, late: already known


@pytest.mark.parametrize("lost", [0, 2, 3, 5])
def test_sequence_numbers_wrap(lost):
    packets = group(65533, 6, seed=7)  # 65533, 65534, 65535, 0, 1, 2
    shuffled = packets[3:] + packets[:3]  # the encoder must find the base across the wrap
    fec = parse_fec(build_fec(shuffled))
    assert fec.seq_base == 65533 and fec.protected == (65533, 65534, 65535, 0, 1, 2)
    decoder = UlpfecDecoder(SSRC)
    for i, packet in enumerate(packets):
        if i != lost:
            decoder.add_media(packet)
    assert decoder.add_fec(fec.serialize()) == [packets[lost]]


def test_mask_length_follows_the_span():
    rng = random.Random(8)
    sixteen = [media(100, rng), media(115, rng)]
    assert parse_fec(build_fec(sixteen)).mask_bits == 16
    twenty = [media(100, rng), media(105, rng), media(119, rng)]
    payload = build_fec(twenty)
    assert payload[0] & 0x40 and parse_fec(payload).mask_bits == 48
    assert parse_fec(payload).protected == (100, 105, 119)
    decoder = UlpfecDecoder(SSRC)
    decoder.add_media(twenty[0])
    decoder.add_media(twenty[2])
    assert decoder.add_fec(payload) == [twenty[1]]
    forty_eight = [media(65530, rng), media(65530 + 47, rng)]
    assert parse_fec(build_fec(forty_eight)).protected == (65530, 41)
    with pytest.raises(UlpfecError):
        build_fec([media(100, rng), media(148, rng)])


def test_build_fec_refuses_what_it_cannot_protect():
    rng = random.Random(9)
    other_ssrc = RtpPacket(payload_type=VP8_PT, sequence_number=2, ssrc=SSRC + 1, payload=b"x").serialize()
    for packets in ([], [media(1, rng), other_ssrc], [media(1, rng), media(1, rng)], [b"\x80" * 11]):
        with pytest.raises(UlpfecError):
            build_fec(packets)


def malformed_payloads() -> list[bytes]:
    good = build_fec(group(600, 3, seed=10))
    long_mask = build_fec([media(600, random.Random(0)), media(630, random.Random(0))])
    return [
        b"",
        good[:9],  # FEC header cut short
        bytes((good[0] | 0x80,)) + good[1:],  # E bit
        good[:13],  # 16-bit mask cut short
        long_mask[:15],  # 48-bit mask cut short
        good[:-1],  # protection length past the data
        good + b"\x00\x00\x00\x00",  # data past level 0: a level-1 header
        good[:12] + b"\x00\x00" + good[14:],  # empty mask
    ]


@pytest.mark.parametrize("index", range(len(malformed_payloads())))
def test_malformed_fec_is_refused_and_changes_nothing(index):
    packets = group(600, 3, seed=10)
    decoder = UlpfecDecoder(SSRC)
    decoder.add_media(packets[0])
    decoder.add_fec(build_fec(group(700, 3, seed=11)))  # one pending, two missing
    before = (decoder.stored_packets, decoder.pending_fec)
    with pytest.raises(UlpfecError):
        decoder.add_fec(malformed_payloads()[index])
    assert (decoder.stored_packets, decoder.pending_fec) == before
    decoder.add_media(packets[2])
    assert decoder.add_fec(build_fec(packets)) == [packets[1]]


def test_malformed_media_is_refused():
    decoder = UlpfecDecoder(SSRC)
    rng = random.Random(12)
    wrong_ssrc = RtpPacket(payload_type=VP8_PT, sequence_number=1, ssrc=SSRC + 1, payload=b"x").serialize()
    bad_padding = bytearray(media(2, rng))
    bad_padding[0] |= 0x20
    bad_padding[-1] = 0
    for packet in (b"", b"\x40" + bytes(11), wrong_ssrc, bytes(bad_padding)):
        with pytest.raises(UlpfecError):
            decoder.add_media(packet)
    assert decoder.stored_packets == 0


def test_fec_inconsistent_with_the_packets_recovers_nothing():
    rng = random.Random(13)
    packets = [media(800, rng, length=100), media(801, rng, length=48), media(802, rng, length=48)]
    payload = build_fec(packets)
    altered = RtpPacket.parse(packets[1])
    altered.payload += b"!" * 20  # not the packet that was protected
    decoder = UlpfecDecoder(SSRC)
    decoder.add_media(altered.serialize())
    decoder.add_media(packets[2])
    assert decoder.add_fec(payload) == []
    assert decoder.pending_fec == 0  # dropped, as libwebrtc drops an FEC that fails


def test_memory_stays_bounded_over_a_long_lossy_stream():
    rng = random.Random(14)
    decoder = UlpfecDecoder(SSRC, window=128, max_pending_fec=16)
    encoder = UlpfecEncoder(group=4)
    recovered = lost = 0
    for n in range(60_000, 80_000):  # across the wrap
        packet = media(n, rng, length=rng.randint(20, 200), marker=n % 5 == 4)
        if rng.random() < 0.1:
            lost += 1
        else:
            recovered += len(decoder.add_media(packet))
        for payload in encoder.add(packet):
            if rng.random() < 0.9:
                recovered += len(decoder.add_fec(payload))
        assert decoder.stored_packets <= 128 and decoder.pending_fec <= 16
    assert lost * 0.5 < recovered <= lost


def test_memory_stays_bounded_across_the_wrap_and_with_hopeless_fec():
    rng = random.Random(15)
    decoder = UlpfecDecoder(SSRC, window=64, max_pending_fec=8)
    for n in range(65_000, 65_000 + 3_000, 4):
        packets = [media(n + i, rng, length=30) for i in range(4)]
        for packet in packets[2:]:  # two of four lost: every FEC waits in vain
            assert decoder.add_media(packet) == []
        assert decoder.add_fec(build_fec(packets)) == []
        assert decoder.stored_packets <= 64 and decoder.pending_fec <= 8


def test_a_restarted_sequence_forgets_the_old_one():
    rng = random.Random(16)
    decoder = UlpfecDecoder(SSRC)
    decoder.add_media(media(100, rng))
    decoder.add_media(media(101, rng))
    decoder.add_fec(build_fec([media(102, rng), media(103, rng)]))
    decoder.add_media(media(40_000, rng))  # a jump no loss explains
    assert (decoder.stored_packets, decoder.pending_fec) == (1, 0)
    assert decoder.add_media(media(40_000 - 300, rng)) == []  # behind the window: ignored
    assert decoder.stored_packets == 1


def test_old_fec_is_dropped_at_once():
    rng = random.Random(17)
    decoder = UlpfecDecoder(SSRC, window=64)
    old = build_fec([media(10, rng), media(11, rng)])
    decoder.add_media(media(200, rng))
    assert decoder.add_fec(old) == [] and decoder.pending_fec == 0


def test_encoder_groups_by_count_and_frame_end():
    rng = random.Random(18)
    encoder = UlpfecEncoder(group=3)
    out = []
    for n in range(7):
        out += [parse_fec(p).protected for p in encoder.add(media(n, rng, marker=n == 4))]
    assert out == [(0, 1, 2), (3, 4)]  # three packets, then the frame's end
    encoder.group = 2
    out = [parse_fec(p).protected for p in encoder.add(media(7, rng))]
    assert out == [(5, 6, 7)]  # the new group size applies to the open group
    assert encoder.flush() == []
    encoder.add(media(8, rng))
    out = [parse_fec(p).protected for p in encoder.add(media(3, rng))]  # not newer: a new group
    assert out == [(8,)]
    assert [parse_fec(p).protected for p in encoder.flush()] == [(3,)]
    with pytest.raises(ValueError):
        encoder.group = 49


def test_encoder_closes_a_group_that_would_span_past_48():
    rng = random.Random(19)
    encoder = UlpfecEncoder(group=10)
    assert encoder.add(media(65530, rng)) == []
    out = encoder.add(media(65530 + 48, rng, marker=True))
    assert [parse_fec(p).protected for p in out] == [(65530,), (42,)]


# --- RED, the way libwebrtc sends video: one block, 1-byte header (F=0, block payload type) ---

def to_red(packet: bytes, seq: int | None = None, marker: bool | None = None) -> bytes:
    """A media packet as a RED packet: same header with the RED payload type, the old type in the RED header."""
    end = rtp_header_length(packet)
    assert not packet[0] & 0x20  # padding would go after the RED block; none here
    first = packet[1] & 0x80 if marker is None else 0x80 * marker
    header = packet[:1] + bytes((first | RED_PT,)) + packet[2:end]
    if seq is not None:
        header = header[:2] + seq.to_bytes(2, "big") + header[4:]
    return header + build_red(packet[1] & 0x7F, packet[end:])


def fec_as_red(last_media: bytes, seq: int, fec_payload: bytes) -> bytes:
    """libwebrtc's FEC packet: the last media packet's header, RED type, marker clear, its own seq."""
    end = rtp_header_length(last_media)
    return to_red(last_media[:end], seq=seq, marker=False)[:end] + build_red(ULPFEC_PT, fec_payload)


def receive_red(decoder: UlpfecDecoder, packet: bytes) -> list[bytes]:
    end = rtp_header_length(packet)
    [block] = parse_red(packet[end:])
    if block.payload_type == ULPFEC_PT:
        return decoder.add_fec(block.data)
    plain = packet[:1] + bytes((packet[1] & 0x80 | block.payload_type,)) + packet[2:end] + block.data
    return decoder.add_media(plain)


def test_recovery_through_red():
    rng = random.Random(20)
    packets = [media(65534 + i, rng, extensions=True, marker=i == 3) for i in range(4)]
    reds = [to_red(p) for p in packets]
    reds.append(fec_as_red(packets[-1], seq=2, fec_payload=build_fec(packets)))
    red_header = RtpPacket.parse(reds[-1])
    assert (red_header.payload_type, red_header.marker, red_header.sequence_number) == (RED_PT, 0, 2)
    assert red_header.payload[0] == ULPFEC_PT  # F=0: the one and only block
    decoder = UlpfecDecoder(SSRC)
    recovered = []
    for i, red in enumerate(reds):
        if i != 1:
            recovered += receive_red(decoder, red)
    assert recovered == [packets[1]]
    assert to_red(recovered[0]) == reds[1]  # and re-wrapped, the RED packet that was lost


def test_zero_extensions_one_byte_header():
    rng = random.Random(21)
    packet = media(5, rng, extensions=True)
    zeroed = zero_extensions(packet, {ABS_SEND_TIME_ID: 0, TWCC_ID: 0})
    parsed, before = RtpPacket.parse(zeroed, EXTENSIONS), RtpPacket.parse(packet, EXTENSIONS)
    assert parsed.extensions.abs_send_time == 0 and parsed.extensions.transport_sequence_number == 0
    assert parsed.extensions.mid == "0" and parsed.payload == before.payload and len(zeroed) == len(packet)
    assert zero_extensions(packet, {}) == packet


def test_zero_extensions_two_byte_header_and_partial_video_timing():
    timing = bytes(range(1, 14))  # video-timing: 13 bytes, id 7 here
    body = bytes((7, 13)) + timing + bytes((9, 2)) + b"\xaa\xbb" + b"\x00"  # 19 bytes + 1 pad
    packet = (bytes((0x90, VP8_PT)) + (1).to_bytes(2, "big") + bytes(4) + SSRC.to_bytes(4, "big")
              + b"\x10\x00" + (len(body) // 4).to_bytes(2, "big") + body + b"payload")
    zeroed = zero_extensions(packet, {7: VIDEO_TIMING_MUTABLE_FROM, 9: 0})
    assert zeroed[18:31] == timing[:7] + bytes(6)
    assert zeroed[31:35] == bytes((9, 2, 0, 0)) and zeroed.endswith(b"\x00payload")


def test_corrupted_fec_never_crashes_nor_returns_a_malformed_packet():
    rng = random.Random(22)
    packets = group(900, 6, seed=22)
    good = build_fec(packets)
    for _ in range(2000):
        payload = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        decoder = UlpfecDecoder(SSRC)
        for packet in packets[1:]:
            decoder.add_media(packet)
        try:
            recovered = decoder.add_fec(bytes(payload))
        except UlpfecError:
            continue
        for packet in recovered:
            rtp_header_length(packet)  # raises if it is not a well-formed RTP packet
            assert packet[8:12] == SSRC.to_bytes(4, "big")
