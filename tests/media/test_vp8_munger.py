"""Vp8Munger: a down-track's VP8 picture IDs and TL0PICIDX run on across a switch of layer."""

from __future__ import annotations

from media.vp8_munger import Vp8Munger


def descriptor(pid: int, tl0: int, body: bytes = b"\x00frame") -> bytes:
    """X, I (15-bit picture ID), L (TL0PICIDX), T (TID/KEYIDX byte)."""
    return bytes([0x90, 0xE0, 0x80 | pid >> 8, pid & 0xFF, tl0, 0x20]) + body


def fields(payload: bytes) -> tuple[int, int]:
    return (payload[2] & 0x7F) << 8 | payload[3], payload[4]


def test_ids_pass_unchanged_until_a_switch_then_follow_the_last_ones_sent():
    munger = Vp8Munger()
    sent = [fields(munger.rewrite(descriptor(pid, tl0))) for pid, tl0 in ((30_000, 7), (30_001, 8), (30_001, 8))]
    assert sent == [(30_000, 7), (30_001, 8), (30_001, 8)]  # one frame in two packets: the same ID
    munger.switch()
    after = [fields(munger.rewrite(descriptor(pid, tl0))) for pid, tl0 in ((12, 200), (13, 201), (14, 201))]
    assert after == [(30_002, 9), (30_003, 10), (30_004, 10)]
    # everything but those fields is left as it came
    assert munger.rewrite(descriptor(15, 202, b"\x01rest"))[5:] == b"\x20\x01rest"


def test_ids_wrap_in_their_own_width():
    munger = Vp8Munger()
    munger.rewrite(descriptor(0x7FFF, 255))
    munger.switch()
    assert fields(munger.rewrite(descriptor(100, 3))) == (0, 0)
    seven_bit = bytes([0x90, 0x80, 0x7F]) + b"x"  # M = 0: a 7-bit picture ID
    other = Vp8Munger()
    other.rewrite(seven_bit)
    other.switch()
    assert other.rewrite(bytes([0x90, 0x80, 0x05]) + b"y")[2] == 0x00  # 127 + 1 wraps to 0


def test_payloads_without_the_fields_are_left_alone():
    munger = Vp8Munger()
    plain = bytes([0x10, 0x00]) + b"frame"  # no X: no picture ID
    assert munger.rewrite(plain) is plain
    assert munger.rewrite(b"\x90") == b"\x90"  # cut short
