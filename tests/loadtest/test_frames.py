"""Frame assembly: continuity by VP8 picture ID, padding (FEC) sequence numbers between frames."""

from __future__ import annotations

from typing import Optional

from loadtest.frames import ReceiverFrameAssembler, vp8_is_keyframe, vp8_picture_id


def vp8_descriptor(picture_id: Optional[int], start: bool, long_id: bool = True) -> bytes:
    """RFC 7741 payload descriptor: X, S (with partition 0) on a frame's first packet, I with the picture ID."""
    first = (0x80 if picture_id is not None else 0) | (0x10 if start else 0)
    if picture_id is None:
        return bytes([first])
    pid = bytes([0x80 | picture_id >> 8, picture_id & 0xFF]) if long_id else bytes([picture_id])
    return bytes([first, 0x80]) + pid


def vp8_stream(frames: list[tuple[int, bool]], first_seq: int = 65530, first_pid: int = 32760,
               long_id: bool = True, fec_after: bool = True) -> list[dict]:
    """Packets of frames given as (packet count, keyframe), picture IDs counting up (wrapping),
    and one FEC sequence number after each frame's last packet (kind "fec") when `fec_after`."""
    modulus = 1 << 15 if long_id else 1 << 7
    out, seq = [], first_seq
    for n, (count, key) in enumerate(frames):
        body = (b"\x00\x00\x00\x9d\x01\x2a" if key else b"\x01\x00\x00") + bytes([n % 256]) * 20
        chunk = -(-len(body) // count)
        pid = (first_pid + n) % modulus
        for k in range(count):
            payload = vp8_descriptor(pid, k == 0, long_id) + body[k * chunk:(k + 1) * chunk]
            out.append({"kind": "media", "seq": seq & 0xFFFF, "ts": 3000 * n, "marker": k == count - 1,
                        "data": body[k * chunk:(k + 1) * chunk], "payload": payload, "frame": n})
            seq += 1
        if fec_after:
            out.append({"kind": "fec", "seq": seq & 0xFFFF, "ts": 3000 * n, "frame": n})
            seq += 1
    return out


def feed(assembler: ReceiverFrameAssembler, packets: list[dict], t: float = 0.0, picture_ids: bool = True) -> list:
    released = []
    for p in packets:
        if p["kind"] == "fec":
            released += assembler.add_padding(p["seq"], t)
            continue
        payload = p["payload"]
        released += assembler.add(p["seq"], p["ts"], p["marker"], p["data"], t,
                                  starts_frame=bool(payload[0] & 0x10),
                                  picture_id=vp8_picture_id(payload) if picture_ids else None)
    return released


def frames_of(released: list) -> list[int]:
    return [f.timestamp // 3000 for f in released]


def test_a_lost_fec_packet_between_frames_breaks_nothing():
    packets = vp8_stream([(3, True)] + [(2, False)] * 12)
    lost = [p for p in packets if p["kind"] == "fec" and p["frame"] in (2, 5, 6)]
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, [p for p in packets if p not in lost])
    assert frames_of(released) == list(range(13))  # across the sequence-number and picture-ID wraps
    assert assembler.frames_skipped == 0 and not assembler.waiting


def test_the_same_holes_break_the_chain_when_there_are_no_picture_ids():
    packets = vp8_stream([(3, True)] + [(2, False)] * 6)
    lost = next(p for p in packets if p["kind"] == "fec" and p["frame"] == 2)
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, [p for p in packets if p is not lost], picture_ids=False)
    assert frames_of(released) == [0, 1, 2]  # by sequence numbers, frame 3 might reference a lost frame
    assert assembler.waiting


def test_received_padding_keeps_the_sequence_number_chain_without_picture_ids():
    """As for H.264 (no picture ID): the FEC sequence numbers that did arrive close the gaps between frames."""
    packets = vp8_stream([(3, True)] + [(2, False)] * 6)
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, packets, picture_ids=False)
    assert frames_of(released) == list(range(7))


def test_late_padding_releases_the_frames_waiting_on_that_gap():
    packets = vp8_stream([(3, True)] + [(2, False)] * 4)
    late = next(p for p in packets if p["kind"] == "fec" and p["frame"] == 1)
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    assert frames_of(feed(assembler, [p for p in packets if p is not late], picture_ids=False)) == [0, 1]
    assert frames_of(feed(assembler, [late], t=1.0)) == [2, 3, 4]


def test_a_lost_media_frame_still_breaks_the_chain_until_the_next_keyframe():
    spec = [(3, True)] + [(2, False)] * 5 + [(3, True)] + [(2, False)] * 2
    packets = [p for p in vp8_stream(spec) if p["frame"] != 3]  # frame 3 and its FEC wholly lost
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, packets)
    assert frames_of(released) == [0, 1, 2, 6, 7, 8]
    assert assembler.frames_skipped == 2  # frames 4 and 5: complete, picture ID chain broken


def test_picture_ids_of_seven_bits_wrap_at_128():
    packets = vp8_stream([(2, True)] + [(1, False)] * 6, first_pid=125, long_id=False)
    packets = [p for p in packets if p["kind"] == "media"]  # every FEC packet lost
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    assert frames_of(feed(assembler, packets)) == list(range(7))


def test_padding_before_a_packet_marks_it_as_the_first_of_its_frame():
    """Even when the payload cannot tell (here the S bit is cleared): the FEC packet follows a frame's end."""
    packets = vp8_stream([(3, True), (2, False), (2, False)])
    marker_of_0 = packets[2]
    for p in packets:
        if p["kind"] == "media" and p["frame"] == 1:
            p["payload"] = bytes([p["payload"][0] & ~0x10]) + p["payload"][1:]
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, [p for p in packets if p is not marker_of_0])
    assert released == [] and assembler.frames_completed == 2  # frames 1 and 2, waiting for frame 0
    assert frames_of(feed(assembler, [marker_of_0])) == [0, 1, 2]


def test_padding_is_not_a_frame_and_duplicates_change_nothing():
    packets = vp8_stream([(2, True), (2, False)])
    assembler = ReceiverFrameAssembler(vp8_is_keyframe)
    released = feed(assembler, packets + packets)
    assert frames_of(released) == [0, 1] and assembler.frames_completed == 2


def test_picture_id_parsing():
    assert vp8_picture_id(vp8_descriptor(0x1234, True)) == (0x1234, 1 << 15)
    assert vp8_picture_id(vp8_descriptor(0x55, False, long_id=False)) == (0x55, 1 << 7)
    assert vp8_picture_id(vp8_descriptor(None, True) + b"\x00\x00") is None  # no X bit
    assert vp8_picture_id(bytes([0x90, 0x00, 0x05])) is None  # X without I
    assert vp8_picture_id(bytes([0x90, 0x80, 0x85])) is None  # long picture ID cut short
