"""Totals of counters that come-and-go objects keep, which never go down.

The media objects (published tracks, down-tracks, processor runners, watermark copies)
count in plain ints, and they go away with their participant. Prometheus counters must
not fall, or rate() reads the fall as a reset and invents traffic. `Tally.totals` sums
the live objects' counters at each scrape and, for an object that is gone since the
previous scrape, keeps its last values: its final ones when it is still in memory
(read again through a weak reference), else those of the previous scrape. So what an
object counted after the last scrape before it went may be missed (nothing, when a
participant's objects outlive the scrape that follows their leaving, as they usually
do), and an object that came and went between two scrapes is not counted at all.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

# (metric name, label values) -> value
Key = tuple[str, tuple[str, ...]]
Reader = Callable[[Any], dict[Key, float]]


@dataclass
class _Seen:
    ref: Optional[weakref.ref]  # None: the object takes no weak reference
    read: Reader
    values: dict[Key, float]

    def alive(self) -> Any:
        return None if self.ref is None else self.ref()


class Tally:
    def __init__(self) -> None:
        self._live: dict[int, _Seen] = {}
        self._retired: defaultdict[Key, float] = defaultdict(float)

    def totals(self, objects: Iterable[tuple[Any, Reader]]) -> dict[Key, float]:
        """Every key's total: the objects given (the live ones, each with how to read it) plus
        everything counted by objects given before and not any more."""
        seen: dict[int, _Seen] = {}
        live: dict[int, Any] = {}
        totals: defaultdict[Key, float] = defaultdict(float, self._retired)
        for obj, read in objects:
            if id(obj) in seen:
                continue  # reached twice: counted once
            values = read(obj)
            seen[id(obj)] = _Seen(_weak(obj), read, values)
            live[id(obj)] = obj
            for key, value in values.items():
                totals[key] += value
        for ident, before in self._live.items():
            previous = before.alive()
            if ident in live and (before.ref is None or previous is live[ident]):
                continue  # the same object, still live
            # gone; or its id now belongs to a new object, so the old one is no more
            final = before.read(previous) if previous is not None else before.values
            for key, value in final.items():
                self._retired[key] += value
                totals[key] += value
        self._live = seen
        return dict(totals)


def _weak(obj: Any) -> Optional[weakref.ref]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return None
