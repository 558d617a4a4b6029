"""The ring of sent packets NACKs are answered from: the newest packet per slot, and never a
packet that only shares a slot with the one asked for."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media.packet_cache import PacketCache, SentPacket
from media.seqnum import seq_add


def sent(seq: int) -> SentPacket:
    return SentPacket(seq, seq * 90, 0, 96, seq.to_bytes(2, "big"))


@given(st.integers(0, 65535), st.integers(1, 3000), st.integers(0, 3000))
def test_the_last_size_packets_are_found_and_older_ones_are_not(start, count, probe):
    cache = PacketCache(size=256)
    numbers = [seq_add(start, i) for i in range(count)]
    for seq in numbers:
        cache.put(sent(seq))
    assert cache.newest_sequence_number == numbers[-1]
    kept = set(numbers[-256:])
    asked = seq_add(start, probe % (count + 300))
    found = cache.get(asked)
    if asked in kept:
        assert found is not None and found.sequence_number == asked and found.payload == asked.to_bytes(2, "big")
    else:
        assert found is None  # gone, or never sent: a slot's other tenant is not it


def test_clear_forgets_everything():
    cache = PacketCache(size=8)
    cache.put(sent(5))
    cache.clear()
    assert cache.get(5) is None and cache.newest_sequence_number is None and cache.size == 8
