"""VP8 and H.264 payload inspection (media/codec_inspect.py) on what a publisher sends.

Properties: any bytes give an answer, never an exception; a keyframe start is always a
frame start; a picture ID is within its modulus; and on payloads built field by field
(RFC 7741 descriptors, RFC 6184 single NAL / STAP-A / FU-A) the answers are exactly
what the fields say, also when the payload is cut short.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from media.codec_inspect import (
    h264_is_keyframe_start,
    keyframe_detector,
    vp8_is_keyframe_start,
    vp8_keyframe_size,
    vp8_picture_id,
    vp8_starts_frame,
)

from .support import fuzzed

# --- VP8 (RFC 7741 payload descriptor) ------------------------------------------------------------


@st.composite
def vp8_payloads(draw: st.DrawFn) -> tuple[bytes, dict]:
    """A descriptor with random fields, then the VP8 payload header's first byte and more."""
    fields = {
        "start": draw(st.booleans()), "partition": draw(st.integers(0, 7)),
        "picture_id": draw(st.none() | st.tuples(st.sampled_from((7, 15)), st.integers(0, 0x7FFF))),
        "tl0": draw(st.booleans()), "tid": draw(st.booleans()), "keyidx": draw(st.booleans()),
        "inter": draw(st.booleans()),
    }
    extended = draw(st.booleans()) or fields["picture_id"] is not None or fields["tl0"] or fields["tid"]
    first = (0x80 if extended else 0) | (0x10 if fields["start"] else 0) | fields["partition"]
    first |= draw(st.sampled_from((0, 0x20)))  # N: non-reference frame, ignored
    out = bytearray((first,))
    if extended:
        out.append((0x80 if fields["picture_id"] else 0) | (0x40 if fields["tl0"] else 0)
                   | (0x20 if fields["tid"] else 0) | (0x10 if fields["keyidx"] else 0))
        if fields["picture_id"] is not None:
            bits, value = fields["picture_id"]
            if bits == 7:
                fields["picture_id"] = (value & 0x7F, 128)
                out.append(value & 0x7F)
            else:
                fields["picture_id"] = (value, 32768)
                out += bytes((0x80 | value >> 8, value & 0xFF))
        if fields["tl0"]:
            out.append(draw(st.integers(0, 255)))
        if fields["tid"] or fields["keyidx"]:
            out.append(draw(st.integers(0, 255)))
    fields["descriptor_length"] = len(out)
    out.append((0x01 if fields["inter"] else 0x00) | draw(st.integers(0, 127)) << 1)
    out += draw(st.binary(max_size=40))
    return bytes(out), fields


@given(fuzzed(vp8_payloads().map(lambda p: p[0]), max_random=64))
@example(b"")
@example(b"\x90")
@example(b"\x90\x80")
def test_vp8_inspection_answers_any_bytes_consistently(payload):
    keyframe = vp8_is_keyframe_start(payload)
    starts = vp8_starts_frame(payload)
    picture_id = vp8_picture_id(payload)
    assert isinstance(keyframe, bool) and isinstance(starts, bool)
    assert not keyframe or starts  # a keyframe starts at a frame's first packet
    size = vp8_keyframe_size(payload)
    assert size is None or (keyframe and all(0 < side < 1 << 14 for side in size))
    if picture_id is not None:
        value, modulus = picture_id
        assert modulus in (128, 32768) and 0 <= value < modulus


@given(vp8_payloads(), st.data())
def test_vp8_inspection_reads_the_fields_it_was_built_from(built, data):
    payload, fields = built
    frame_start = fields["start"] and fields["partition"] == 0
    assert vp8_starts_frame(payload) == frame_start
    assert vp8_is_keyframe_start(payload) == (frame_start and not fields["inter"])
    assert vp8_picture_id(payload) == fields["picture_id"]
    # a keyframe with its start code says its size (14 bits each, the 2 upscaling bits aside)
    width, height = data.draw(st.integers(1, 0x3FFF)), data.draw(st.integers(1, 0x3FFF))
    header = fields["descriptor_length"]
    sized = (payload[:header + 3].ljust(header + 3, b"\0") + b"\x9d\x01\x2a"
             + (width | data.draw(st.integers(0, 3)) << 14).to_bytes(2, "little")
             + (height | data.draw(st.integers(0, 3)) << 14).to_bytes(2, "little"))
    assert vp8_keyframe_size(sized) == ((width, height) if vp8_is_keyframe_start(sized) else None)
    # cut short inside the descriptor: never a keyframe, never a wrong picture ID
    cut = payload[:data.draw(st.integers(0, fields["descriptor_length"]))]
    assert not vp8_is_keyframe_start(cut)
    assert vp8_picture_id(cut) in (None, fields["picture_id"])


# --- H.264 (RFC 6184) -----------------------------------------------------------------------------

KEY_NAL_TYPES = (5, 7)  # IDR slice, SPS
nal_types = st.sampled_from((1, 5, 6, 7, 8, 9)) | st.integers(1, 23)


def nal(nal_type: int, body: bytes, nri: int = 3) -> bytes:
    return bytes(((nri << 5) | nal_type,)) + body


@given(st.one_of(
    st.builds(nal, nal_types, st.binary(max_size=30)),
    st.lists(st.builds(nal, nal_types, st.binary(max_size=20)), min_size=1, max_size=5).map(
        lambda units: b"\x78" + b"".join(len(u).to_bytes(2, "big") + u for u in units)),
    st.builds(lambda start, t, body: bytes((0x7C, (0x80 if start else 0) | t)) + body,
              st.booleans(), nal_types, st.binary(max_size=30)),
).flatmap(lambda p: fuzzed(st.just(p), max_random=64)))
@example(b"\x18\xff\xff\x67")  # STAP-A with a size past the end
@example(b"\x1c")  # FU-A without its header
@example(b"\x78\x00\x00\x65")  # STAP-A with a zero-length unit
def test_h264_inspection_answers_any_bytes(payload):
    assert isinstance(h264_is_keyframe_start(payload), bool)


@given(nal_types, st.binary(max_size=30))
def test_h264_single_nal_unit(nal_type, body):
    assert h264_is_keyframe_start(nal(nal_type, body)) == (nal_type in KEY_NAL_TYPES)


@given(st.lists(st.tuples(nal_types, st.binary(max_size=20)), min_size=1, max_size=6))
def test_h264_stap_a_is_a_keyframe_start_when_any_unit_is(units):
    payload = b"\x78" + b"".join(len(u).to_bytes(2, "big") + u for u in (nal(t, b) for t, b in units))
    assert h264_is_keyframe_start(payload) == any(t in KEY_NAL_TYPES for t, _ in units)


@given(st.booleans(), st.booleans(), nal_types, st.binary(max_size=30))
def test_h264_fu_a_starts_a_keyframe_only_at_the_start_of_one(start, end, nal_type, body):
    payload = bytes((0x7C, (0x80 if start else 0) | (0x40 if end else 0) | nal_type)) + body
    assert h264_is_keyframe_start(payload) == (start and nal_type in KEY_NAL_TYPES)


@given(st.text(max_size=12) | st.sampled_from(("VP8", "vp8", "H264", "h264", "opus", "VP9", "rtx")))
def test_keyframe_detector_for_any_codec_name(name):
    detector = keyframe_detector(name)
    assert detector in (None, vp8_is_keyframe_start, h264_is_keyframe_start)
    assert (detector is not None) == (name.upper() in ("VP8", "H264"))
