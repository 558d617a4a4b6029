"""RED (RFC 2198) and ULPFEC (RFC 5109) as they arrive from a publisher: media/red.py,
media/ulpfec.py and the uplink's RED unwrap (media/uplink_fec.py).

Properties: malformed input raises the module's own error (RedError, UlpfecError) and
nothing else; a malformed FEC payload changes no decoder state; what parses serializes
back to the same bytes; the decoder's memory stays within its window and pending limit;
everything it rebuilds is a well-formed RTP packet of its stream, byte for byte the
original when the packets it had were genuine, and everything single-loss FEC can rebuild
is rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import event, example, given
from hypothesis import strategies as st

from media.red import MAX_BLOCK_LENGTH, MAX_TIMESTAMP_OFFSET, RedBlock, RedError, build_red, parse_red
from media.sdp_video_fec import VideoFecPayloadTypes
from media.seqnum import seq_add, seq_diff
from media.ulpfec import (
    MAX_PROTECTED_SPAN,
    RTP_HEADER_SIZE,
    UlpfecDecoder,
    UlpfecError,
    build_fec,
    parse_fec,
    rtp_header_length,
    zero_extensions,
)
from media.uplink_fec import PICTURES_REMEMBERED, SEEN_WINDOW, UplinkVideoFec

from .support import fuzzed, mutated, scaled

SSRC = 0x1234ABCD
MEDIA_PT = 96

# --- RTP packets built field by field --------------------------------------------------------------


def rtp(seq: int, *, timestamp: int = 90_000, ssrc: int = SSRC, payload_type: int = MEDIA_PT, marker: bool = False,
        payload: bytes = b"", csrcs: tuple[int, ...] = (), extension: bytes | None = None, padding: int = 0) -> bytes:
    """An RTP packet; `extension` is the extension block's data (profile 0xBEDE, whole words)."""
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension is not None else 0) | len(csrcs)
    out = bytearray((first, (0x80 if marker else 0) | payload_type))
    out += seq.to_bytes(2, "big") + timestamp.to_bytes(4, "big") + ssrc.to_bytes(4, "big")
    for csrc in csrcs:
        out += csrc.to_bytes(4, "big")
    if extension is not None:
        out += b"\xbe\xde" + (len(extension) // 4).to_bytes(2, "big") + extension
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes((padding,))
    return bytes(out)


@st.composite
def one_byte_extensions(draw: st.DrawFn) -> bytes:
    """RFC 8285 one-byte elements (ids 1-14), padded to whole words."""
    data = bytearray()
    for _ in range(draw(st.integers(0, 4))):
        ext_id = draw(st.integers(1, 14))
        body = draw(st.binary(min_size=1, max_size=16))
        data += bytes(((ext_id << 4) | (len(body) - 1),)) + body
        data += bytes(draw(st.integers(0, 2)))  # padding bytes between elements
    data += bytes(-len(data) % 4)
    return bytes(data)


@st.composite
def media_packets(draw: st.DrawFn, seq: int | None = None, ssrc: int = SSRC) -> bytes:
    return rtp(
        draw(st.integers(0, 0xFFFF)) if seq is None else seq,
        timestamp=draw(st.integers(0, 0xFFFFFFFF)), ssrc=ssrc, payload_type=draw(st.integers(0, 127)),
        marker=draw(st.booleans()), payload=draw(st.binary(max_size=300)),
        csrcs=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=3))),
        extension=draw(st.none() | one_byte_extensions()), padding=draw(st.sampled_from((0, 0, 1, 4))))


@st.composite
def groups(draw: st.DrawFn, max_count: int = 12) -> list[bytes]:
    """Media packets of one SSRC that one FEC payload can protect (distinct numbers, span < 48)."""
    base = draw(st.integers(0, 0xFFFF))
    offsets = draw(st.lists(st.integers(0, MAX_PROTECTED_SPAN - 1), min_size=1, max_size=max_count, unique=True))
    return [draw(media_packets(seq=seq_add(base, o))) for o in offsets]


fec_payloads = groups().map(build_fec)

# --- RED -------------------------------------------------------------------------------------------

red_payloads = st.builds(
    build_red, st.integers(0, 127), st.binary(max_size=200),
    st.lists(st.tuples(st.integers(1, MAX_TIMESTAMP_OFFSET), st.binary(max_size=100)), max_size=3))


@given(fuzzed(red_payloads))
@example(b"")
@example(bytes([0x80 | 111]) * 8)  # headers only, never a primary
def test_parse_red_accounts_for_every_byte_or_raises_red_error(payload):
    try:
        blocks = parse_red(payload)
    except RedError:
        return
    assert blocks and blocks[-1].timestamp_offset == 0
    header_size = 4 * (len(blocks) - 1) + 1
    assert header_size + sum(len(b.data) for b in blocks) == len(payload)
    assert b"".join(b.data for b in blocks) == payload[header_size:]
    for block in blocks:
        assert 0 <= block.payload_type <= 127
    for block in blocks[:-1]:
        assert len(block.data) <= MAX_BLOCK_LENGTH and 0 <= block.timestamp_offset <= MAX_TIMESTAMP_OFFSET


@given(st.integers(0, 127), st.binary(max_size=300),
       st.lists(st.tuples(st.integers(0, 2 * MAX_TIMESTAMP_OFFSET), st.binary(max_size=1100)), max_size=4))
def test_build_red_then_parse_red_gives_the_describable_blocks_back(payload_type, primary, redundant):
    usable = [(o, d) for o, d in redundant if 0 < o <= MAX_TIMESTAMP_OFFSET and len(d) <= MAX_BLOCK_LENGTH]
    expected = [RedBlock(payload_type, o, d) for o, d in usable] + [RedBlock(payload_type, 0, primary)]
    assert parse_red(build_red(payload_type, primary, redundant)) == expected


@given(fuzzed(red_payloads))
def test_a_parsed_red_payload_builds_back_to_the_same_bytes(payload):
    try:
        blocks = parse_red(payload)
    except RedError:
        return
    primary = blocks[-1]
    if all(b.payload_type == primary.payload_type and b.timestamp_offset > 0 for b in blocks[:-1]):
        rebuilt = build_red(primary.payload_type, primary.data, [(b.timestamp_offset, b.data) for b in blocks[:-1]])
        assert rebuilt == payload


@given(fuzzed(red_payloads | st.builds(lambda pt, data: bytes((pt,)) + data, st.integers(0, 127), st.binary())))
def test_the_uplink_red_unwrap_gives_the_primary_or_red_error(payload):
    try:
        payload_type, data = UplinkVideoFec.unwrap(payload)
    except RedError:
        return
    assert 0 <= payload_type <= 127 and payload.endswith(data)


# --- ULPFEC: parsing ------------------------------------------------------------------------------


@given(fuzzed(fec_payloads))
def test_parse_fec_serializes_back_to_the_same_bytes_or_raises_ulpfec_error(payload):
    try:
        fec = parse_fec(payload)
    except UlpfecError:
        return
    assert fec.serialize() == payload
    assert len(fec.protected) == bin(fec.mask).count("1") >= 1
    assert all(0 <= seq_diff(s, fec.seq_base) < fec.mask_bits for s in fec.protected)


@given(groups())
def test_build_fec_protects_exactly_the_packets_it_was_given(packets):
    fec = parse_fec(build_fec(packets))
    seqs = {int.from_bytes(p[2:4], "big") for p in packets}
    assert set(fec.protected) == seqs and len(fec.protected) == len(packets)
    assert len(fec.payload) == max(len(p) for p in packets) - RTP_HEADER_SIZE
    assert fec.mask_bits == (16 if max(seq_diff(s, fec.seq_base) for s in seqs) < 16 else 48)


@given(fuzzed(media_packets()))
def test_rtp_header_length_is_within_the_packet_or_raises_ulpfec_error(packet):
    try:
        length = rtp_header_length(packet)
    except UlpfecError:
        return
    assert RTP_HEADER_SIZE <= length <= len(packet)
    if packet[0] & 0x20:
        assert length + packet[-1] <= len(packet)


@given(media_packets())
def test_rtp_header_length_of_a_well_formed_packet(packet):
    cc, has_ext = packet[0] & 0x0F, packet[0] & 0x10
    ext_words = int.from_bytes(packet[14 + 4 * cc:16 + 4 * cc], "big") if has_ext else 0
    assert rtp_header_length(packet) == 12 + 4 * cc + (4 + 4 * ext_words if has_ext else 0)


@given(fuzzed(media_packets()), st.dictionaries(st.integers(0, 255), st.integers(0, 16), max_size=4))
def test_zero_extensions_only_zeroes_bytes_inside_the_extension_block(packet, zero_from):
    try:
        zeroed = zero_extensions(packet, zero_from)
    except UlpfecError:
        return
    assert len(zeroed) == len(packet)
    start = RTP_HEADER_SIZE + 4 * (packet[0] & 0x0F) + 4
    end = rtp_header_length(packet)
    for i, (a, b) in enumerate(zip(packet, zeroed)):
        if a != b:
            assert start <= i < end and b == 0
    assert zero_extensions(zeroed, zero_from) == zeroed


# --- ULPFEC: the decoder --------------------------------------------------------------------------


def decoder_state(decoder: UlpfecDecoder) -> tuple:
    return (dict(decoder._packets), [(p.fec, p.newest) for p in decoder._pending], decoder._newest)


@scaled(2)
@given(st.lists(media_packets(), max_size=6), st.lists(fec_payloads, max_size=3), fuzzed(fec_payloads))
def test_malformed_fec_is_refused_and_changes_nothing(media, fecs, payload):
    decoder = UlpfecDecoder(SSRC)
    for packet in media:
        decoder.add_media(packet)
    for good in fecs:
        decoder.add_fec(good)
    before = decoder_state(decoder)
    try:
        parse_fec(payload)
    except UlpfecError:
        try:
            decoder.add_fec(payload)
        except UlpfecError:
            assert decoder_state(decoder) == before
            return
        raise AssertionError("a payload parse_fec refuses was taken")


@given(fuzzed(media_packets()))
def test_malformed_media_is_refused_and_changes_nothing(packet):
    decoder = UlpfecDecoder(SSRC)
    decoder.add_media(rtp(100, payload=b"x"))
    before = decoder_state(decoder)
    try:
        decoder.add_media(packet)
    except UlpfecError:
        assert decoder_state(decoder) == before


@dataclass
class Delivery:
    kind: str  # "media", "fec" or "junk"
    data: bytes
    seq: int = -1  # media: its number
    genuine: bool = True


@st.composite
def uplink_streams(draw: st.DrawFn) -> tuple[list[Delivery], dict[int, bytes], bool]:
    """A stream of media with FEC after each group, as it arrives: some lost, some late,
    some twice; optionally some mutated or junk. Returns (deliveries, originals, clean)."""
    base = draw(st.sampled_from((0, 65_500, 30_000)) | st.integers(0, 0xFFFF))
    originals: dict[int, bytes] = {}
    sent: list[Delivery] = []
    seq = base
    for _ in range(draw(st.integers(1, 12))):
        size = draw(st.integers(1, 8))
        group = []
        for _ in range(size):
            packet = rtp(seq, timestamp=draw(st.integers(0, 0xFFFFFFFF)), marker=draw(st.booleans()),
                         payload=draw(st.binary(min_size=1, max_size=120)),
                         extension=draw(st.none() | one_byte_extensions()), padding=draw(st.sampled_from((0, 0, 3))))
            originals[seq] = packet
            group.append(packet)
            sent.append(Delivery("media", packet, seq))
            seq = seq_add(seq, 1)
        sent.append(Delivery("fec", build_fec(group)))
    clean = draw(st.booleans())
    arrived: list[Delivery] = []
    for item in sent:
        fate = draw(st.sampled_from(("arrive", "arrive", "arrive", "lost", "twice", "late", "mutate")))
        if fate == "lost":
            continue
        if fate == "mutate" and not clean:
            arrived.append(Delivery(item.kind, draw(mutated(st.just(item.data))), item.seq, genuine=False))
            continue
        arrived.append(item)
        if fate == "twice":
            arrived.append(item)
        elif fate == "late" and len(arrived) > 1:
            at = draw(st.integers(max(0, len(arrived) - 6), len(arrived) - 1))
            arrived.insert(at, arrived.pop())
    if not clean:
        for _ in range(draw(st.integers(0, 4))):
            junk = draw(fuzzed(fec_payloads) | fuzzed(media_packets(ssrc=SSRC)))
            arrived.insert(draw(st.integers(0, len(arrived))), Delivery("junk", junk, genuine=False))
    return arrived, originals, clean


def single_loss_fixpoint(arrived: list[Delivery]) -> set[int]:
    """What a decoder that never forgets holds at the end: media that arrived plus everything
    FEC that arrived can rebuild, one missing packet at a time, until nothing changes."""
    known = {d.seq for d in arrived if d.kind == "media"}
    fecs = [parse_fec(d.data).protected for d in arrived if d.kind == "fec"]
    progress = True
    while progress:
        progress = False
        for protected in fecs:
            missing = [s for s in protected if s not in known]
            if len(missing) == 1:
                known.add(missing[0])
                progress = True
    return known


@scaled(2)
@given(uplink_streams(), st.sampled_from((256, 256, 64, MAX_PROTECTED_SPAN)), st.sampled_from((64, 64, 4, 1)))
def test_the_decoder_rebuilds_only_well_formed_packets_within_bounded_memory(stream, window, max_pending):
    arrived, originals, clean = stream
    decoder = UlpfecDecoder(SSRC, window=window, max_pending_fec=max_pending)
    rebuilt: dict[int, bytes] = {}
    for item in arrived:
        before = decoder_state(decoder)
        try:
            if item.kind == "media" or (item.kind == "junk" and item.data[8:12] == SSRC.to_bytes(4, "big")):
                out = decoder.add_media(item.data)
            else:
                out = decoder.add_fec(item.data)
        except UlpfecError:
            assert decoder_state(decoder) == before  # refused: nothing changed
            continue
        assert decoder.stored_packets <= window and decoder.pending_fec <= max_pending
        for packet in out:
            rtp_header_length(packet)  # raises unless well-formed
            seq = int.from_bytes(packet[2:4], "big")
            assert packet[8:12] == SSRC.to_bytes(4, "big") and seq not in before[0]
            if clean:
                assert packet == originals[seq]
            rebuilt[seq] = packet
    fec_count = sum(1 for d in arrived if d.kind == "fec")
    if clean and window >= 256 and fec_count <= max_pending:
        # nothing was forgotten: every packet single-loss FEC could rebuild was rebuilt
        media = {d.seq for d in arrived if d.kind == "media"}
        assert single_loss_fixpoint(arrived) == media | set(rebuilt)
        event("genuine stream: completeness checked")
    event(f"{'rebuilt' if rebuilt else 'rebuilt nothing'}, {'genuine' if clean else 'altered'} stream")


# --- the uplink's FEC bookkeeping -----------------------------------------------------------------

PTS = VideoFecPayloadTypes(red=116, ulpfec=118, rtx=117)


@scaled(4)
@given(st.lists(st.tuples(st.sampled_from(("fec", "lost-fec", "holds")), st.integers(0, 0xFFFF),
                          st.integers(0, 0xFFFFFFFF), fuzzed(fec_payloads, max_random=200)), max_size=40))
def test_uplink_fec_bookkeeping_takes_any_fec_and_stays_bounded(ops):
    uplink = UplinkVideoFec(PTS, {}, frozenset({MEDIA_PT}))
    for op, seq, timestamp, payload in ops:
        if op == "fec":
            try:
                uplink.fec_arrived(seq, timestamp, SSRC, payload)
            except UlpfecError:
                pass
            assert uplink.is_fec(seq)  # malformed or not, its number held no media
        elif op == "holds":
            last = seq_add(seq, timestamp % 70)
            if uplink.holds_no_media(seq, last):
                uplink.note_lost_fec(seq, last)
        else:
            uplink.note_fec(seq, timestamp)
        assert len(uplink._seen) <= SEEN_WINDOW and len(uplink._pictures) <= PICTURES_REMEMBERED
