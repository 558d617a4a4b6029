"""Delivering webhooks: one sender task per endpoint, in order, retried with backoff.

Every event goes to the outbox first (one writer thread keeps them in emit order), then the
endpoint's task POSTs the oldest undelivered one until the receiver answers 2xx. A failure
(any other status, a timeout, a refused connection) waits an exponentially growing,
jittered delay and tries the same event again, so events arrive in order and none is
skipped; an event older than `max_age_s` is given up with an error in the log. Delivery is
at least once: a receiver de-duplicates by the event id (webhook-id header).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import aiohttp
import yarl

from .events import WebhookEvent
from .outbox import OUTBOX_FILE, OutboxError, PendingDelivery, WebhookOutbox
from .signing import secret_key, sign

logger = logging.getLogger(__name__)

T = TypeVar("T")
USER_AGENT = "consult-sfu-webhooks/1"
WARN_EVERY_ATTEMPTS = 10  # after the first failure, one warning per this many (the rest at INFO)


def check_endpoints(endpoints: Sequence[str]) -> None:
    """Raises ValueError, saying what is wrong, unless every URL is one a webhook can go to."""
    for endpoint in endpoints:
        url = yarl.URL(endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"a webhook URL must be http(s)://host/...: {endpoint!r}")
        if url.user or url.password:
            raise ValueError(f"a webhook URL must not hold credentials (bodies are signed instead): {endpoint!r}")
    if len(set(endpoints)) != len(endpoints):
        raise ValueError("a webhook URL is given twice")


def shown(endpoint: str) -> str:
    """An endpoint as the log shows it: without its query, which may carry the receiver's key
    (Azure Functions' `?code=`, chat webhooks' `?key=…&token=…`)."""
    url = yarl.URL(endpoint)
    return str(url.with_query(None).with_fragment(None)) + ("?[query]" if url.raw_query_string else "")


@dataclass(frozen=True)
class WebhookSettings:
    endpoints: tuple[str, ...]
    secret: str
    timeout_s: float = 10.0  # one attempt, connection to last byte
    retry_base_s: float = 1.0  # the first retry's delay; doubled each time
    retry_cap_s: float = 300.0  # a receiver back after an outage gets its backlog within this
    max_age_s: float = 72 * 3600.0  # an event not delivered by then is given up (and logged)

    def __post_init__(self) -> None:
        check_endpoints(self.endpoints)
        secret_key(self.secret)  # raises ValueError for one that is not in whsec_ form

    def retry_delay_s(self, attempts: int) -> float:
        """The wait after the `attempts`-th failure: exponential, capped, with jitter so that
        several servers behind one receiver that comes back do not all retry at once."""
        return min(self.retry_cap_s, self.retry_base_s * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)


class WebhookSender:
    """The room-event listener that turns consultation events into webhooks."""

    def __init__(self, settings: WebhookSettings, data_dir: Path, outbox_file: str = OUTBOX_FILE) -> None:
        """`outbox_file`: one per process sending (each worker of a machine keeps its own)."""
        self.settings = settings
        self._path = data_dir / outbox_file
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-outbox")
        self._outbox: Optional[WebhookOutbox] = None
        self._wake = {endpoint: asyncio.Event() for endpoint in settings.endpoints}
        self._tasks: list[asyncio.Task] = []
        self._writes: set[asyncio.Future] = set()
        self._stopping = asyncio.Event()
        self._http: Optional[aiohttp.ClientSession] = None
        self._acks: dict[str, list[asyncio.Future[None]]] = {}  # event id -> who waits for its first 2xx

    async def start(self) -> None:
        """Opens the outbox (raises OutboxError) and starts sending what it holds."""
        self._outbox = await self._in_thread(WebhookOutbox, self._path)
        backlog = await self._in_thread(self._outbox.backlog)
        for endpoint, count in backlog.items():
            if endpoint in self._wake:
                logger.info("webhooks: %d event(s) for %s kept from before; sending them first", count,
                            shown(endpoint))
            else:
                logger.warning("webhooks: %d event(s) are kept for %s, which is no longer configured; they "
                               "are sent if it is configured again", count, shown(endpoint))
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                                           headers={"User-Agent": USER_AGENT})
        self._tasks = [asyncio.ensure_future(self._send_loop(endpoint)) for endpoint in self.settings.endpoints]

    def on_room_event(self, type: str, room_id: str, room_instance: str, data: dict, event_id: str) -> None:
        """signalling.room_events listener: store the event (under the room's id for it), then wake the senders."""
        self.emit(WebhookEvent.new(type, room_id, room_instance, data, event_id))

    def emit(self, event: WebhookEvent) -> None:
        outbox = self._outbox
        if outbox is None or not self.settings.endpoints:
            return
        endpoints = list(self.settings.endpoints)
        future = asyncio.ensure_future(
            self._in_thread(outbox.add, event.id, event.type, event.body(), event.created_at, endpoints))
        self._writes.add(future)
        future.add_done_callback(self._written)

    def acknowledged(self, event_id: str) -> asyncio.Future[None]:
        """Done once a receiver has answered 2xx to event `event_id` (the first of the endpoints
        to do so: the clinic's systems have it), so the room can tell the patient the clinic
        knows. Ask right after emitting the event. Never done when no receiver takes it (down
        for good, given up, the server stops): cancel it to stop waiting, which also forgets it.
        Nothing waits on the sender's side: delivery goes on as for any other event."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._acks.setdefault(event_id, []).append(future)
        future.add_done_callback(functools.partial(self._forget_ack, event_id))
        return future

    def _acknowledge(self, event_id: str) -> None:
        for future in self._acks.pop(event_id, []):
            if not future.done():
                future.set_result(None)

    def _forget_ack(self, event_id: str, future: asyncio.Future[None]) -> None:
        waiting = self._acks.get(event_id)
        if waiting is not None and future in waiting:
            waiting.remove(future)
            if not waiting:
                del self._acks[event_id]

    def _written(self, future: asyncio.Future) -> None:
        self._writes.discard(future)
        if future.cancelled():
            return
        if future.exception() is not None:
            logger.error("webhooks: an event could not be kept and is lost: %s", future.exception())
            return
        for wake in self._wake.values():
            wake.set()

    async def close(self) -> None:
        """Waits for events being written and for attempts under way (so a receiver that took
        one does not get it again after a restart); what is not delivered stays in the outbox."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.timeout_s + 1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for waiting in list(self._acks.values()):  # not delivered by this process: it will not tell them
            for future in list(waiting):
                future.cancel()
        if self._http is not None:
            await self._http.close()
        if self._outbox is not None:
            await self._in_thread(self._outbox.close)
            self._outbox = None
        self._executor.shutdown(wait=True)

    async def _send_loop(self, endpoint: str) -> None:
        wake = self._wake[endpoint]
        while not self._stopping.is_set():
            wake.clear()
            try:
                item = await self._in_thread(self._head, endpoint)
            except OutboxError as exc:
                logger.error("webhooks: %s", exc)
                await self._pause(self.settings.retry_cap_s)
                continue
            if item is None:
                await self._pause(None, wake)
                continue
            wait_s = item.next_attempt_at - time.time()
            if wait_s > 0:
                await self._pause(wait_s)
                continue
            error = await self._post(item)
            if error is None:  # taken: whoever waits may say so, whatever the outbox does next
                self._acknowledge(item.event_id)
            try:
                if error is None:
                    await self._in_thread(self._delivered, item.seq)
                elif time.time() - item.created_at > self.settings.max_age_s:
                    logger.error("webhooks: %s %s to %s given up after %d attempts over %.0f h (last: %s)",
                                 item.event_type, item.event_id, shown(endpoint), item.attempts + 1,
                                 self.settings.max_age_s / 3600, error)
                    await self._in_thread(self._delivered, item.seq)
                else:
                    self._log_failure(item, error)
                    next_at = time.time() + self.settings.retry_delay_s(item.attempts + 1)
                    await self._in_thread(self._failed, item.seq, error, next_at)
            except OutboxError as exc:  # the receiver may see this event again: that is at least once
                logger.error("webhooks: %s", exc)
                await self._pause(self.settings.retry_base_s)

    async def _pause(self, seconds: Optional[float], wake: Optional[asyncio.Event] = None) -> None:
        """Sleep for `seconds` (None: until woken), cut short by `wake` or by close()."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    async def _post(self, item: PendingDelivery) -> Optional[str]:
        """None when the receiver took it; otherwise why not."""
        assert self._http is not None
        headers = {"Content-Type": "application/json", **sign(self.settings.secret, item.event_id, item.body)}
        try:
            # no redirects: a webhook goes where the operator said, and nowhere a receiver points
            async with self._http.post(item.endpoint, data=item.body, headers=headers,
                                       allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except asyncio.TimeoutError:
            return f"no answer within {self.settings.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _log_failure(self, item: PendingDelivery, error: str) -> None:
        attempt = item.attempts + 1
        level = logging.WARNING if attempt == 1 or attempt % WARN_EVERY_ATTEMPTS == 0 else logging.INFO
        logger.log(level, "webhooks: %s %s to %s failed (attempt %d): %s; retrying", item.event_type,
                   item.event_id, shown(item.endpoint), attempt, error)

    # outbox calls, made on its one thread
    def _head(self, endpoint: str) -> Optional[PendingDelivery]:
        assert self._outbox is not None
        return self._outbox.head(endpoint)

    def _delivered(self, seq: int) -> None:
        assert self._outbox is not None
        self._outbox.delivered(seq)

    def _failed(self, seq: int, error: str, next_at: float) -> None:
        assert self._outbox is not None
        self._outbox.failed(seq, error, next_at)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
