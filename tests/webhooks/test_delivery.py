"""Webhook delivery against a real receiver on loopback: in order, signed, retried through
failures, timeouts and outages, and nothing lost or sent twice across a sender restart."""

from __future__ import annotations

import asyncio
import logging

import pytest

from webhooks import WebhookEvent, WebhookSender, WebhookSettings, new_webhook_secret
from webhooks.outbox import OUTBOX_FILE, WebhookOutbox

from .receiver import WebhookReceiver

FAST = {"timeout_s": 0.5, "retry_base_s": 0.05, "retry_cap_s": 0.2}


@pytest.fixture
def receiver(webhook_receiver: WebhookReceiver) -> WebhookReceiver:
    return webhook_receiver


def event(n: int) -> WebhookEvent:
    return WebhookEvent.new("participant.joined", "r1", "i1", {"n": n})


async def sender_for(tmp_path, *endpoints: str, secret: str, **settings) -> WebhookSender:
    sender = WebhookSender(WebhookSettings(tuple(endpoints), secret, **{**FAST, **settings}), tmp_path)
    await sender.start()
    return sender


async def test_events_arrive_signed_in_order_and_leave_the_outbox(tmp_path, receiver):
    sender = await sender_for(tmp_path, receiver.url, secret=receiver.secret)
    sent = [event(n) for n in range(20)]
    for e in sent:
        sender.emit(e)
    got = await receiver.wait_for(20)
    assert [e["id"] for e in got] == [e.id for e in sent]
    assert got[0]["type"] == "participant.joined" and got[0]["room"] == {"id": "r1", "instance": "i1"}
    assert receiver.bad_signatures == 0 and receiver.attempts == 20
    await sender.close()
    outbox = WebhookOutbox(tmp_path / OUTBOX_FILE)
    assert outbox.backlog() == {}
    outbox.close()


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_a_failing_or_hanging_receiver_gets_every_event_once_it_recovers(tmp_path, receiver, mode, caplog):
    receiver.mode = mode
    sender = await sender_for(tmp_path, receiver.url, secret=receiver.secret)
    sent = [event(n) for n in range(5)]
    with caplog.at_level(logging.INFO, logger="webhooks"):
        for e in sent:
            sender.emit(e)
        while receiver.attempts < 4:  # the first event, tried again and again
            await asyncio.sleep(0.05)
        assert receiver.events == []
        receiver.mode = "ok"
        got = await receiver.wait_for(5)
    await sender.close()
    # In order, each once: a hung attempt is abandoned before the next one starts.
    assert [e["id"] for e in got] == [e.id for e in sent] and len(receiver.events) == 5
    failures = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert failures and failures[0].levelno == logging.WARNING
    why = "HTTP 503" if mode == "fail" else "no answer within 0.5 s"
    assert why in failures[0].getMessage()
    assert receiver.secret not in caplog.text


async def test_a_receiver_that_is_down_gets_its_backlog_when_it_comes_up(tmp_path):
    receiver = WebhookReceiver(secret=new_webhook_secret())  # not started: connections are refused
    sender = await sender_for(tmp_path, receiver.url, secret=receiver.secret)
    sent = [event(n) for n in range(5)]
    for e in sent:
        sender.emit(e)
    await asyncio.sleep(0.5)
    await receiver.start()
    try:
        got = await receiver.wait_for(5)
        assert [e["id"] for e in got] == [e.id for e in sent]
    finally:
        await sender.close()
        await receiver.stop()


async def test_a_restart_mid_backlog_loses_nothing_and_sends_nothing_twice(tmp_path, receiver):
    receiver.mode = "fail"
    first = await sender_for(tmp_path, receiver.url, secret=receiver.secret)
    sent = [event(n) for n in range(10)]
    for e in sent[:6]:
        first.emit(e)
    while receiver.attempts < 2:
        await asyncio.sleep(0.05)
    receiver.mode = "ok"  # comes back while the server goes down: some delivered, some not
    await receiver.wait_for(2)
    await first.close()

    second = await sender_for(tmp_path, receiver.url, secret=receiver.secret)
    for e in sent[6:]:
        second.emit(e)
    got = await receiver.wait_for(10)
    await asyncio.sleep(0.3)
    await second.close()
    assert [e["id"] for e in got] == [e.id for e in sent]
    assert len(receiver.events) == 10


async def test_each_endpoint_has_its_own_queue(tmp_path, receiver):
    """A receiver that is down holds back only its own events."""
    down = WebhookReceiver(secret=receiver.secret)
    sender = await sender_for(tmp_path, down.url, receiver.url, secret=receiver.secret)
    for n in range(3):
        sender.emit(event(n))
    assert len(await receiver.wait_for(3)) == 3
    await sender.close()
    outbox = WebhookOutbox(tmp_path / OUTBOX_FILE)
    assert outbox.backlog() == {down.url: 3}
    outbox.close()


async def test_an_event_older_than_the_limit_is_given_up_with_an_error(tmp_path, receiver, caplog):
    receiver.mode = "fail"
    sender = await sender_for(tmp_path, receiver.url, secret=receiver.secret, max_age_s=0.3)
    sender.emit(event(0))
    with caplog.at_level(logging.ERROR, logger="webhooks"):
        while "given up" not in caplog.text:
            await asyncio.sleep(0.05)
    receiver.mode = "ok"
    sender.emit(event(1))
    [got] = await receiver.wait_for(1)
    await sender.close()
    assert got["data"] == {"n": 1}


def test_retry_delays_grow_to_the_cap_with_jitter():
    settings = WebhookSettings(("http://127.0.0.1:1/",), new_webhook_secret(), retry_base_s=1, retry_cap_s=300)
    for attempts, full in ((1, 1), (2, 2), (5, 16), (9, 256), (10, 300), (30, 300)):
        delays = [settings.retry_delay_s(attempts) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len(set(delays)) > 1


@pytest.mark.parametrize("url, problem", [
    ("ftp://clinic.example/hooks", "http"),
    ("/hooks", "http"),
    ("https://user:pw@clinic.example/hooks", "credentials"),
])
def test_a_url_a_webhook_cannot_go_to_is_refused(url, problem):
    with pytest.raises(ValueError, match=problem):
        WebhookSettings((url,), new_webhook_secret())


def test_the_same_url_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        WebhookSettings(("https://a.example/h", "https://a.example/h"), new_webhook_secret())


async def test_acknowledged_is_done_once_a_receiver_took_that_event_and_not_before(tmp_path, receiver):
    """The hook a waiting room hangs on (signalling/waiting_room.py): keyed by the event's id,
    done on the first 2xx for it, never on a failure, and forgotten when the waiter gives up."""
    down = WebhookReceiver(secret=receiver.secret)  # never started: one endpoint the clinic has lost
    receiver.mode, receiver.fail_status = "fail", 500
    sender = await sender_for(tmp_path, down.url, receiver.url, secret=receiver.secret)
    first, second = event(0), event(1)
    sender.emit(first)
    sender.emit(second)
    took_first, took_second = sender.acknowledged(first.id), sender.acknowledged(second.id)
    given_up = sender.acknowledged(second.id)
    given_up.cancel()  # e.g. the patient left: the sender keeps nothing for it
    while receiver.attempts < 3:
        await asyncio.sleep(0.05)
    assert not took_first.done() and not took_second.done()  # 500s are no acknowledgement

    receiver.mode = "ok"
    await asyncio.wait_for(took_first, 5)  # one receiver of two is enough: the clinic has it
    assert receiver.events[0]["id"] == first.id  # ... after it had taken it
    await asyncio.wait_for(took_second, 5)
    assert [e["id"] for e in receiver.events] == [first.id, second.id]
    assert sender._acks == {}
    never = sender.acknowledged(event(2).id)  # not emitted: nothing will ever take it
    await sender.close()
    assert never.cancelled()
