"""The durable outbox: every webhook not yet delivered, one row per event and endpoint.

SQLite in the data directory (WAL, synchronous=FULL), so an event that was written survives
a crash or a restart and a receiver that is down for hours loses nothing. A row is deleted
when its endpoint answers 2xx. Not thread-safe: the sender uses it from one thread.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

OUTBOX_FILE = "webhooks.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX IF NOT EXISTS deliveries_by_endpoint ON deliveries (endpoint, seq);
"""


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written (disk full, corrupt, not ours)."""


@dataclass(frozen=True)
class PendingDelivery:
    seq: int
    event_id: str
    event_type: str
    endpoint: str
    body: bytes
    created_at: float
    attempts: int
    next_attempt_at: float


class WebhookOutbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # bodies name rooms and identities: ours only
            os.close(fd)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"the webhook outbox {path} cannot be opened: {exc}") from exc

    def add(self, event_id: str, event_type: str, body: bytes, created_at: float, endpoints: list[str]) -> None:
        """One row per endpoint, in one transaction (an event is kept for all or for none)."""
        self._write("INSERT OR IGNORE INTO deliveries (event_id, event_type, endpoint, body, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(event_id, event_type, endpoint, body, created_at) for endpoint in endpoints])

    def head(self, endpoint: str) -> Optional[PendingDelivery]:
        """The oldest undelivered event for `endpoint`: each receiver gets events in order."""
        row = self._db.execute(
            "SELECT seq, event_id, event_type, endpoint, body, created_at, attempts, next_attempt_at "
            "FROM deliveries WHERE endpoint = ? ORDER BY seq LIMIT 1", (endpoint,)).fetchone()
        return None if row is None else PendingDelivery(*row)

    def delivered(self, seq: int) -> None:
        self._write("DELETE FROM deliveries WHERE seq = ?", [(seq,)])

    def failed(self, seq: int, error: str, next_attempt_at: float) -> None:
        self._write("UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                    "WHERE seq = ?", [(error[:500], next_attempt_at, seq)])

    def backlog(self) -> dict[str, int]:
        """Undelivered events by endpoint."""
        return dict(self._db.execute("SELECT endpoint, COUNT(*) FROM deliveries GROUP BY endpoint").fetchall())

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: list[tuple]) -> None:
        try:
            with self._db:  # a transaction: committed (and synced) or rolled back
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise OutboxError(f"the webhook outbox {self.path} cannot be written: {exc}") from exc
