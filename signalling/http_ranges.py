"""HTTP Range (RFC 9110, section 14) for bodies served in pieces: parsing the `Range` header
and streaming the bytes it asks for.

A <video> element seeks with Range requests, and a replay is too big to hold in memory
(hundreds of MB, decrypted piece by piece), so the replay API (signalling/replay_api.py)
serves its media through these. Two kinds of body:

- one of known size (a finished file): `parse_range` gives the range to send, None for the
  whole body, or ValueError for 416;
- one still growing, its size unknown (a replay being prepared): `parse_ready_range` gives a
  range within the bytes that are ready, answered with an unknown total (`bytes a-b/*`).

Only single ranges are served; several ranges or another unit get the whole body (RFC 9110
allows that). Nothing here knows what the bytes are: the caller gives a reader.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Optional

from aiohttp import web

logger = logging.getLogger(__name__)

SEND_CHUNK = 1 << 20  # bytes read (decrypted) per write of a response
MAX_OFFSET_DIGITS = 18  # past 10^18 bytes every offset is beyond any body
RANGE_HEADER = re.compile(r"^bytes=(\d*)-(\d*)$")

ReadBytes = Callable[[int, int], Awaitable[bytes]]  # (start, end) -> the body's bytes [start, end)


def parse_range(header: str, size: int) -> Optional[tuple[int, int]]:
    """(first, last) byte of a single `bytes=` range, inclusive; None to send everything;
    ValueError when it cannot be satisfied."""
    match = RANGE_HEADER.match(header.strip().replace(" ", ""))
    if match is None:
        return None  # absent, several ranges or another unit: the whole body (RFC 9110 allows that)
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError("range not satisfiable")
    return start, end


def parse_ready_range(header: str, ready: int) -> Optional[tuple[int, int]]:
    """(first, last) byte, inclusive, of a single `bytes=` range of a body still growing (its size
    unknown) that starts within its first `ready` bytes, cut to them; None when the header asks
    for the whole body, its last bytes, or bytes not ready yet (the caller says to come back);
    ValueError when the range ends before it starts."""
    match = RANGE_HEADER.match(header.strip().replace(" ", ""))
    if match is None or not match.group(1) or byte_offset(match.group(1)) >= ready:
        return None
    first = byte_offset(match.group(1))
    last = min(byte_offset(match.group(2)), ready - 1) if match.group(2) else ready - 1
    if last < first:
        raise ValueError("range not satisfiable")
    return first, last


def byte_offset(digits: str) -> int:
    """A byte offset from a Range header. Past 10^18 bytes every offset is beyond any file, and int()
    refuses strings of over 4300 digits (a 500 for a client's header)."""
    return int(digits) if len(digits) <= MAX_OFFSET_DIGITS else 10 ** MAX_OFFSET_DIGITS


def content_range(first: int, last: int, total: Optional[int]) -> str:
    """The Content-Range of a 206: `bytes first-last/total`, `/*` while the total is unknown."""
    return f"bytes {first}-{last}/{'*' if total is None else total}"


def ranged_media_headers(content_type: str) -> dict[str, str]:
    """The headers of a private media body served by ranges: never cached, never sniffed, no
    referrer sent on, shown inline."""
    return {"Accept-Ranges": "bytes", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Content-Disposition": "inline", "Content-Type": content_type}


def not_satisfiable(headers: dict[str, str], total: Optional[int]) -> web.Response:
    """416, with the body's size (`bytes */total`, `*` while unknown) as RFC 9110 asks."""
    return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{'*' if total is None else total}"})


async def send_byte_range(request: web.Request, read: ReadBytes, status: int, first: int, last: int,
                          headers: dict[str, str], *,
                          interrupted_by: tuple[type[Exception], ...] = ()) -> web.StreamResponse:
    """Reads and sends bytes [first, last] piecewise (SEND_CHUNK at a time). The first piece is read
    before the headers go out, so a failure still gets an error response; a later read failing with
    one of `interrupted_by` (the body went away mid-response) closes the connection, since the
    headers promised more than can be sent."""
    length = max(0, last - first + 1)
    head = request.method == "HEAD"
    piece = b"" if head or not length else await read(first, min(last + 1, first + SEND_CHUNK))
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    if not head and length:
        await response.write(piece)
        pos = first + len(piece)
        while pos <= last:
            try:
                piece = await read(pos, min(last + 1, pos + SEND_CHUNK))
            except interrupted_by as exc:
                logger.info("ranged response %s ended early: %s", request.path, exc)
                if request.transport is not None:
                    request.transport.close()
                return response
            await response.write(piece)
            pos += len(piece)
    await response.write_eof()
    return response
