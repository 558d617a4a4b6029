"""RFC 2198 redundant audio (RED) payloads: parse and build.

Browsers that negotiate `red/48000/2` for Opus send each 20 ms packet as a RED
payload carrying the current Opus frame (the primary) and the previous one or two
frames again (redundant blocks). A packet lost on the uplink is then usually
inside the next one, 20 ms later, where a retransmission would take a round trip.

Layout: one 4-byte header per redundant block (F=1, payload type, timestamp
offset back from the packet's timestamp, block length), a 1-byte header for the
primary (F=0, payload type), then the blocks' data in the same order, oldest
first, primary last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_TIMESTAMP_OFFSET = (1 << 14) - 1
MAX_BLOCK_LENGTH = (1 << 10) - 1


class RedError(ValueError):
    """The payload is not a well-formed RED payload."""


@dataclass(frozen=True)
class RedBlock:
    payload_type: int
    timestamp_offset: int  # how far before the packet's timestamp (0 for the primary)
    data: bytes


def parse_red(payload: bytes) -> list[RedBlock]:
    """Blocks oldest first, primary last. Raises RedError on a malformed payload."""
    headers: list[tuple[int, int, int]] = []  # (pt, offset, length); length -1: the primary
    pos = 0
    while True:
        if pos >= len(payload):
            raise RedError("RED header runs past the payload")
        first = payload[pos]
        if not first & 0x80:
            headers.append((first & 0x7F, 0, -1))
            pos += 1
            break
        if pos + 4 > len(payload):
            raise RedError("RED block header truncated")
        word = int.from_bytes(payload[pos + 1:pos + 4], "big")
        headers.append((first & 0x7F, word >> 10, word & 0x3FF))
        pos += 4
    blocks = []
    for pt, offset, length in headers:
        if length < 0:
            blocks.append(RedBlock(pt, 0, payload[pos:]))
            break
        if pos + length > len(payload):
            raise RedError("RED block longer than the payload")
        blocks.append(RedBlock(pt, offset, payload[pos:pos + length]))
        pos += length
    return blocks


def build_red(primary_payload_type: int, primary: bytes, redundant: Sequence[tuple[int, bytes]] = ()) -> bytes:
    """A RED payload: `redundant` is [(timestamp offset, data)] oldest first, same payload type.

    Blocks that RED cannot describe (offset or length too large) are left out, as senders do.
    """
    usable = [(o, d) for o, d in redundant if 0 < o <= MAX_TIMESTAMP_OFFSET and len(d) <= MAX_BLOCK_LENGTH]
    out = bytearray()
    for offset, data in usable:
        out.append(0x80 | primary_payload_type)
        out += ((offset << 10) | len(data)).to_bytes(3, "big")
    out.append(primary_payload_type & 0x7F)
    for _, data in usable:
        out += data
    out += primary
    return bytes(out)
