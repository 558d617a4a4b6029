"""Modular arithmetic for 16-bit RTP sequence numbers and 32-bit timestamps."""

from __future__ import annotations

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def seq_add(a: int, b: int) -> int:
    return (a + b) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in the 16-bit ring, in [-32768, 32767]."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


def ts_add(a: int, b: int) -> int:
    return (a + b) % TS_MOD


def ts_diff(a: int, b: int) -> int:
    d = (a - b) % TS_MOD
    return d - TS_MOD if d >= TS_MOD // 2 else d
