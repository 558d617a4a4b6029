"""The durable outbox: kept across a reopen, in order per endpoint, private to the server."""

from __future__ import annotations

import stat

import pytest

from webhooks.outbox import OutboxError, WebhookOutbox

A, B = "http://127.0.0.1:1/a", "http://127.0.0.1:1/b"


def test_events_are_kept_in_order_per_endpoint_and_survive_a_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    outbox = WebhookOutbox(path)
    for n in range(3):
        outbox.add(f"evt_{n}", "room.started", b"{}", 100.0 + n, [A, B])
    outbox.add("evt_0", "room.started", b"{}", 100.0, [A])  # the same event again: kept once
    assert outbox.backlog() == {A: 3, B: 3}
    outbox.close()

    outbox = WebhookOutbox(path)
    head = outbox.head(A)
    assert head is not None and head.event_id == "evt_0" and head.attempts == 0
    outbox.failed(head.seq, "HTTP 503", next_attempt_at=200.0)
    head = outbox.head(A)
    assert head is not None and (head.event_id, head.attempts, head.next_attempt_at) == ("evt_0", 1, 200.0)
    outbox.delivered(head.seq)
    assert [outbox.head(e).event_id for e in (A, B)] == ["evt_1", "evt_0"]  # type: ignore[union-attr]
    assert outbox.backlog() == {A: 2, B: 3}
    assert outbox.head("http://127.0.0.1:1/other") is None
    outbox.close()


def test_the_file_is_readable_by_the_server_only(tmp_path):
    WebhookOutbox(tmp_path / "outbox.sqlite3").close()
    assert stat.S_IMODE((tmp_path / "outbox.sqlite3").stat().st_mode) == 0o600


def test_a_file_that_is_not_an_outbox_is_a_clear_error(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="cannot be opened"):
        WebhookOutbox(path)
