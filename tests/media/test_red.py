"""RFC 2198 RED payloads: what browsers send is read back exactly; garbage is refused."""

from __future__ import annotations

import pytest

from media.red import MAX_BLOCK_LENGTH, RedBlock, RedError, build_red, parse_red


def test_round_trip_with_two_redundant_blocks():
    payload = build_red(111, b"now", [(1920, b"two-back"), (960, b"one-back")])
    assert parse_red(payload) == [RedBlock(111, 1920, b"two-back"), RedBlock(111, 960, b"one-back"),
                                  RedBlock(111, 0, b"now")]


def test_a_chrome_style_payload_distance_one():
    # header: F=1 PT=111, offset 960, length 3; then F=0 PT=111; then the data
    payload = bytes([0x80 | 111]) + ((960 << 10) | 3).to_bytes(3, "big") + bytes([111]) + b"abc" + b"primary"
    assert parse_red(payload) == [RedBlock(111, 960, b"abc"), RedBlock(111, 0, b"primary")]


def test_primary_only():
    assert parse_red(build_red(111, b"x")) == [RedBlock(111, 0, b"x")]


def test_blocks_red_cannot_describe_are_left_out():
    payload = build_red(111, b"p", [(1 << 14, b"too-old"), (960, b"x" * (MAX_BLOCK_LENGTH + 1)), (960, b"ok")])
    assert parse_red(payload) == [RedBlock(111, 960, b"ok"), RedBlock(111, 0, b"p")]


@pytest.mark.parametrize("payload", [
    b"",  # nothing
    bytes([0x80 | 111, 0x00]),  # block header cut short
    bytes([0x80 | 111]) + ((960 << 10) | 50).to_bytes(3, "big") + bytes([111]) + b"short",  # block past the end
    bytes([0x80 | 111]) * 8,  # headers only, never a primary
])
def test_malformed_payloads_are_refused(payload):
    with pytest.raises(RedError):
        parse_red(payload)
