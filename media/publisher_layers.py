"""How many of a publisher's simulcast layers it should send: the lowest n.

A layer above what any subscriber's tile needs (and no recording or processor takes)
costs the publisher's uplink, its encoder and its battery for nothing; a patient's phone
waiting for the doctor sends only its smallest layer. Layers come back at once when
someone needs them; they go only after being unwanted for a while, so a tile resized
back and forth, or a subscriber reconnecting, does not restart an encoder each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

# A layer wanted by nobody this long is turned off at the publisher.
LOWER_AFTER_S = 5.0


class PublisherLayers:
    def __init__(self, count: int, on_change: Callable[[int], None]) -> None:
        """`count`: the layers the publisher sends, all of them to start with (a browser's
        default); `on_change(n)`: tell the publisher to send its lowest n from now on."""
        if count < 1:
            raise ValueError("a publisher sends at least one layer")
        self.count = count
        self.active = count
        self._on_change = on_change
        self._fewer_since: Optional[float] = None  # since when fewer than `active` have been wanted
        self.changes = 0

    def update(self, wanted: int, now: float) -> None:
        """`wanted`: how many layers (the lowest) anyone takes now; never fewer than one."""
        wanted = max(1, min(wanted, self.count))
        if wanted >= self.active:
            self._fewer_since = None
            if wanted > self.active:
                self._set(wanted)
            return
        if self._fewer_since is None:
            self._fewer_since = now
        elif now - self._fewer_since >= LOWER_AFTER_S:
            self._fewer_since = None
            self._set(wanted)

    def _set(self, active: int) -> None:
        self.active = active
        self.changes += 1
        self._on_change(active)
