"""Links revoked before they expire (by their token's `jti`), kept across restarts.

A kicked participant's link, or one an admin withdraws, must not work again however long
it had left. The list lives in `<data dir>/revoked-links.json` (0600, rewritten atomically):
`{"<jti>": <the link's expiry, unix seconds>}`. An entry is needed only until its link
expires, so expired entries are dropped whenever the file is read or written; the file
stays as small as the number of revoked links still alive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Protocol

from recorder.fsutil import atomic_write

from .tokens import JTI_PATTERN

REVOCATIONS_FILE = "revoked-links.json"


class RevocationStore(Protocol):
    """Where revoked links are kept: this file, or Redis for several nodes (signalling/redis_state.py)."""

    def is_revoked(self, jti: str) -> bool: ...

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Raises ValueError for a malformed jti, OSError when it cannot be kept (it is refused
        here until a restart all the same)."""
        ...


class RevocationsUnreadable(Exception):
    """The file exists but cannot be read: starting without it would quietly un-revoke links."""


class RevocationList:
    def __init__(self, path: Optional[Path], *, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._revoked: dict[str, int] = self._load() if path is not None else {}

    def _load(self) -> dict[str, int]:
        assert self._path is not None
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RevocationsUnreadable(f"{self._path} cannot be read ({exc}); restore or remove it "
                                        "(removing it makes every revoked link valid again until it expires)") from exc
        if not isinstance(raw, dict):
            raise RevocationsUnreadable(f"{self._path} is not a JSON object of jti -> expiry")
        now = self._clock()
        return {jti: int(exp) for jti, exp in raw.items()
                if isinstance(jti, str) and isinstance(exp, (int, float)) and exp > now}

    async def revoke(self, jti: str, expires_at: int) -> None:
        """Refuse the link with this jti until `expires_at` (when it would stop working anyway)."""
        if not JTI_PATTERN.match(jti):
            raise ValueError("not a link id (jti): 32 lowercase hexadecimal digits")
        self._revoked[jti] = max(int(expires_at), self._revoked.get(jti, 0))
        self._save()

    def is_revoked(self, jti: str) -> bool:
        exp = self._revoked.get(jti)
        return exp is not None and exp > self._clock()

    def __len__(self) -> int:
        return sum(1 for exp in self._revoked.values() if exp > self._clock())

    def _save(self) -> None:
        now = self._clock()
        self._revoked = {jti: exp for jti, exp in self._revoked.items() if exp > now}
        if self._path is not None:
            atomic_write(self._path, json.dumps(self._revoked, sort_keys=True).encode())
