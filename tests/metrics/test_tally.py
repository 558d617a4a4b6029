"""Counters summed over objects that come and go never fall, and count each object once."""

from __future__ import annotations

import gc

from metrics.tally import Tally


class Track:
    def __init__(self, kind: str, packets: int = 0) -> None:
        self.kind = kind
        self.packets = packets


def read(track: Track) -> dict:
    return {("packets", (track.kind,)): track.packets}


def test_live_objects_are_summed_by_key_and_counted_once():
    tally = Tally()
    a, b, c = Track("video", 10), Track("video", 5), Track("audio", 7)
    assert tally.totals([(a, read), (b, read), (c, read), (a, read)]) == {
        ("packets", ("video",)): 15, ("packets", ("audio",)): 7}


def test_an_object_that_goes_keeps_its_final_count_while_it_is_still_in_memory():
    tally = Tally()
    a, b = Track("video", 10), Track("video", 5)
    assert tally.totals([(a, read), (b, read)])[("packets", ("video",))] == 15
    a.packets = 40  # counted more after that scrape, then left (its object still referenced)
    b.packets = 6
    assert tally.totals([(b, read)])[("packets", ("video",))] == 46
    assert tally.totals([(b, read)])[("packets", ("video",))] == 46  # retired once, not at every scrape


def test_an_object_already_freed_keeps_what_the_last_scrape_saw():
    tally = Tally()
    a = Track("audio", 10)
    tally.totals([(a, read)])
    a.packets = 99
    del a
    gc.collect()
    assert tally.totals([]) == {("packets", ("audio",)): 10}


def test_totals_never_fall_as_objects_come_and_go():
    tally = Tally()
    previous = 0.0
    live: list[Track] = []
    for step in range(30):
        live.append(Track("video"))
        for track in live:
            track.packets += step
        if step % 3 == 0:
            live.pop(0)
            gc.collect()
        total = tally.totals([(t, read) for t in live]).get(("packets", ("video",)), 0.0)
        assert total >= previous
        previous = total


def test_a_new_object_at_a_freed_objects_address_is_a_new_object():
    tally = Tally()
    old = Track("video", 10)
    tally.totals([(old, read)])
    ident = id(old)
    del old
    gc.collect()
    # CPython reuses addresses: find a new object at the old one's, or at least one that is new
    candidates = [Track("video", 3) for _ in range(1000)]
    new = next((t for t in candidates if id(t) == ident), candidates[0])
    assert tally.totals([(new, read)]) == {("packets", ("video",)): 13}
