"""Sequence-number and timestamp arithmetic across the wrap, checked against plain integers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media.seqnum import SEQ_MOD, TS_MOD, seq_add, seq_diff, ts_add, ts_diff

seqs = st.integers(0, SEQ_MOD - 1)
steps = st.integers(-(SEQ_MOD // 2), SEQ_MOD // 2 - 1)


@given(seqs, steps)
def test_adding_a_distance_and_measuring_it_back_agree_across_the_wrap(a, step):
    b = seq_add(a, step)
    assert 0 <= b < SEQ_MOD
    assert seq_diff(b, a) == step


@given(st.integers(0, TS_MOD - 1), st.integers(-(TS_MOD // 2), TS_MOD // 2 - 1))
def test_timestamps_wrap_the_same_way_in_32_bits(a, step):
    b = ts_add(a, step)
    assert 0 <= b < TS_MOD and ts_diff(b, a) == step


def test_the_wrap_itself():
    assert seq_add(65535, 1) == 0 and seq_diff(0, 65535) == 1 and seq_diff(65535, 0) == -1
    assert seq_diff(32768, 0) == -32768  # half the ring away: counted as behind
    assert ts_diff(0, TS_MOD - 3000) == 3000
