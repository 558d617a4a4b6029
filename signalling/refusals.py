"""Refused requests from callers without valid credentials: counted, and summarised in the
audit log at most once per interval.

Writing one fsync'd audit entry per refused anonymous request would let anyone grow the
log (and the disk) without limit, with text of their choosing. Instead each refusal bumps
a counter per reason (our own error codes) and per remote address (bounded), and one
`access.failed` entry per interval says how many there were, of which kind, from where.
Nothing the caller chose (paths, claimed identities, token text) is kept.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Optional

SUMMARY_INTERVAL_S = 60.0
MAX_REMOTES = 1000   # addresses counted one by one; beyond that they are counted together
TOP_REMOTES = 10     # addresses named in an entry
OTHER_REMOTES = "other"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class RefusalSummary:
    def __init__(self, interval_s: float = SUMMARY_INTERVAL_S, *, clock: Callable[[], float] = time.time) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._reasons: Counter[str] = Counter()
        self._remotes: Counter[str] = Counter()
        self._since: Optional[float] = None  # the first refusal counted since the last entry

    @property
    def pending(self) -> int:
        return sum(self._reasons.values())

    def count(self, reason: str, remote: Optional[str]) -> bool:
        """Counts one refusal; True when it is the first since the last entry (a window opens)."""
        opened = self._since is None
        if opened:
            self._since = self._clock()
        self._reasons[reason] += 1
        address = remote or "unknown"
        self._remotes[address if address in self._remotes or len(self._remotes) < MAX_REMOTES
                      else OTHER_REMOTES] += 1
        return opened

    def take(self) -> Optional[dict[str, Any]]:
        """The details of one audit entry for everything counted, and a fresh start; None if nothing was."""
        if self._since is None:
            return None
        details: dict[str, Any] = {
            "summary": True, "refusals": self.pending, "reasons": dict(sorted(self._reasons.items())),
            "from": _iso(self._since), "until": _iso(self._clock()),
            "remotes": dict(self._remotes.most_common(TOP_REMOTES)), "distinct_remotes": len(self._remotes)}
        self._reasons.clear()
        self._remotes.clear()
        self._since = None
        return details
