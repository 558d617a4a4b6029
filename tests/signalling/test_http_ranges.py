"""HTTP Range (signalling/http_ranges.py): parsing a Range header against a body of known size
and against one still growing, and streaming the bytes asked for piecewise.

The replay API's use of these (a finished or prepared replay, over a real server) is in
test_replay_api.py; the fuzzed properties are in tests/fuzz/test_fuzz_range.py.
"""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from signalling import http_ranges
from signalling.http_ranges import (
    byte_offset,
    content_range,
    not_satisfiable,
    parse_range,
    parse_ready_range,
    ranged_media_headers,
    send_byte_range,
)

# --- a body of known size ---------------------------------------------------------------------------


def test_parse_range():
    assert parse_range("", 1000) is None
    assert parse_range("bytes=0-", 1000) == (0, 999)
    assert parse_range("bytes=0-0", 1000) == (0, 0)
    assert parse_range("bytes=10-19", 1000) == (10, 19)
    assert parse_range("bytes=990-5000", 1000) == (990, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=0-1,5-6", 1000) is None  # several ranges: the whole body
    assert parse_range("items=0-1", 1000) is None
    for bad in ("bytes=1000-", "bytes=20-10", "bytes=-0"):
        with pytest.raises(ValueError):
            parse_range(bad, 1000)


def test_a_suffix_range_is_the_last_bytes():
    assert parse_range("bytes=-500", 1000) == (500, 999)
    assert parse_range("bytes=-1", 1000) == (999, 999)
    assert parse_range("bytes=-1000", 1000) == (0, 999)
    with pytest.raises(ValueError):
        parse_range("bytes=-500", 0)  # an empty body has no last bytes


def test_an_open_range_runs_to_the_end():
    assert parse_range("bytes=100-", 1000) == (100, 999)
    assert parse_range("bytes=999-", 1000) == (999, 999)


def test_a_range_starting_past_the_end_cannot_be_satisfied():
    for header in ("bytes=1000-", "bytes=1000-1000", "bytes=5000-6000"):
        with pytest.raises(ValueError):
            parse_range(header, 1000)
    with pytest.raises(ValueError):
        parse_range("bytes=0-", 0)


def test_several_ranges_another_unit_or_garbage_get_the_whole_body():
    for header in ("bytes=0-1,5-6", "bytes=-5,10-", "items=0-1", "Bytes=0-1", "bytes 0-1", "bytes=", "bytes=-",
                   "bytes=a-b", "bytes=1-2-3", "bytes=+1-2", "0-1", "garbage", "bytes=\x00"):
        assert parse_range(header, 1000) is None, header


def test_spaces_and_surrounding_whitespace_are_ignored():
    assert parse_range("  bytes = 10 - 19 ", 1000) == (10, 19)
    assert parse_range("\tbytes=-100\n", 1000) == (900, 999)


def test_an_offset_of_too_many_digits_is_a_value_error_not_a_crash():
    with pytest.raises(ValueError):
        parse_range("bytes=" + "9" * 5000 + "-", 1000)  # int() refuses it: 416, like any unsatisfiable range
    assert parse_range("bytes=0-" + "9" * 30, 1000) == (0, 999)


# --- a body still growing -----------------------------------------------------------------------------


def test_a_range_within_what_is_ready_is_cut_to_it():
    assert parse_ready_range("bytes=0-", 500) == (0, 499)
    assert parse_ready_range("bytes=100-199", 500) == (100, 199)
    assert parse_ready_range("bytes=100-5000", 500) == (100, 499)
    assert parse_ready_range("bytes=499-", 500) == (499, 499)
    assert parse_ready_range(" bytes = 10 - 19 ", 500) == (10, 19)


def test_the_whole_body_its_end_or_bytes_not_ready_are_for_later():
    for header in ("", "bytes=-100", "bytes=500-", "bytes=600-700", "bytes=0-1,5-6", "items=0-1", "garbage",
                   "bytes=" + "9" * 5000 + "-"):
        assert parse_ready_range(header, 500) is None, header[:40]
    assert parse_ready_range("bytes=0-", 0) is None  # nothing rendered yet


def test_a_growing_range_that_ends_before_it_starts_cannot_be_satisfied():
    with pytest.raises(ValueError):
        parse_ready_range("bytes=20-10", 500)


def test_byte_offsets_past_the_digit_limit_are_beyond_any_body():
    assert byte_offset("0") == 0
    assert byte_offset("9" * 18) == 10**18 - 1
    assert byte_offset("9" * 19) == 10**18
    assert byte_offset("1" * 5000) == 10**18  # not int()'s ValueError for over 4300 digits


def test_response_headers():
    assert content_range(10, 19, 1000) == "bytes 10-19/1000"
    assert content_range(10, 19, None) == "bytes 10-19/*"
    headers = ranged_media_headers("audio/webm")
    assert headers["Content-Type"] == "audio/webm" and headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer" and headers["Content-Disposition"] == "inline"
    refused = not_satisfiable(headers, 1000)
    assert refused.status == 416 and refused.headers["Content-Range"] == "bytes */1000"
    assert refused.headers["Content-Type"].startswith("audio/webm")
    assert not_satisfiable(headers, None).headers["Content-Range"] == "bytes */*"


# --- sending ----------------------------------------------------------------------------------------


BODY = bytes(i & 0xFF for i in range(100))


class Sent:
    """What a mocked aiohttp request's writer was given, and the reads that fed it."""

    def __init__(self, method: str = "GET", fail_after: int | None = None) -> None:
        self.chunks: list[bytes] = []
        self.reads: list[tuple[int, int]] = []
        self.fail_after = fail_after
        self.writer = writer = mock.Mock()
        writer.write_headers = writer.write_eof = writer.drain = mock.AsyncMock(return_value=None)
        writer.send_headers = mock.Mock(return_value=None)
        writer.write = self._write
        self.transport = mock.Mock()
        self.request = make_mocked_request(method, "/media", writer=writer, transport=self.transport)

    async def _write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    async def read(self, start: int, end: int) -> bytes:
        if self.fail_after is not None and len(self.reads) >= self.fail_after:
            raise LookupError("the body went away")
        self.reads.append((start, end))
        return BODY[start:end]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


async def test_a_range_is_sent_in_pieces(monkeypatch):
    monkeypatch.setattr(http_ranges, "SEND_CHUNK", 16)
    sent = Sent()
    response = await send_byte_range(sent.request, sent.read, 206, 10, 49, {"Content-Range": "bytes 10-49/100"})
    assert response.status == 206 and response.content_length == 40
    assert response.headers["Content-Range"] == "bytes 10-49/100"
    assert sent.body == BODY[10:50]
    assert sent.reads == [(10, 26), (26, 42), (42, 50)]


async def test_the_whole_body_in_one_piece_when_it_fits():
    sent = Sent()
    response = await send_byte_range(sent.request, sent.read, 200, 0, 99, {})
    assert response.status == 200 and response.content_length == 100 and sent.body == BODY
    assert sent.reads == [(0, 100)]


async def test_head_and_empty_ranges_read_nothing():
    head = Sent("HEAD")
    response = await send_byte_range(head.request, head.read, 206, 0, 49, {})
    assert response.content_length == 50 and head.reads == [] and head.body == b""
    empty = Sent()
    response = await send_byte_range(empty.request, empty.read, 200, 0, -1, {})  # a body of 0 bytes
    assert response.content_length == 0 and empty.reads == [] and empty.body == b""


async def test_a_failing_first_read_happens_before_any_header():
    sent = Sent(fail_after=0)
    with pytest.raises(LookupError):
        await send_byte_range(sent.request, sent.read, 206, 0, 49, {}, interrupted_by=(LookupError,))
    assert not sent.writer.write_headers.called  # the caller can still answer with an error


async def test_a_body_gone_mid_response_closes_the_connection(monkeypatch):
    monkeypatch.setattr(http_ranges, "SEND_CHUNK", 16)
    sent = Sent(fail_after=2)
    await send_byte_range(sent.request, sent.read, 206, 0, 99, {}, interrupted_by=(LookupError,))
    assert sent.body == BODY[:32] and sent.transport.close.called  # fewer bytes than promised: cut off


async def test_other_failures_mid_response_are_not_swallowed(monkeypatch):
    monkeypatch.setattr(http_ranges, "SEND_CHUNK", 16)
    sent = Sent(fail_after=1)
    with pytest.raises(LookupError):
        await send_byte_range(sent.request, sent.read, 206, 0, 99, {})
