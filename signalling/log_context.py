"""Who a log line is about: the request, room and participant ids of the code that logged it.

Three context variables hold them. `request_ids` (an aiohttp middleware, the app's first) gives
every HTTP request an id: the caller's `X-Request-Id` when it is short and plain (a proxy's or
a load balancer's, so its lines and ours can be matched), else a new one; the response carries
it back in the same header, the 101 of a WebSocket too. aiohttp runs each request in a task of
its own, so the id stays with that request. A WebSocket session binds its room id once its
token is verified and its participant id once it has joined (signalling/session.py); asyncio
copies the context into every task when the task is created, so what the session starts from
then on (offers, a recording) carries them too. Code run in executor threads does not
(`run_in_executor` does not copy the context): its lines carry no ids.

`ContextFilter`, on the log handler, copies the ids onto each record (`room`, `participant`,
`request`; None when unknown) for signalling/log_format.py. Nothing here is on a packet path.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from contextvars import ContextVar
from typing import Awaitable, Callable, Optional

from aiohttp import web

REQUEST_ID_HEADER = "X-Request-Id"
CONTEXT_FIELDS = ("room", "participant", "request")
# An incoming id is used only when it is short and cannot break a log line or a header:
# a UUID, a proxy's hex id and the like.
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
REQUEST_ID_KEY = web.RequestKey("request_id", str)

room_id: ContextVar[Optional[str]] = ContextVar("consult_room_id", default=None)
participant_id: ContextVar[Optional[str]] = ContextVar("consult_participant_id", default=None)
request_id: ContextVar[Optional[str]] = ContextVar("consult_request_id", default=None)
_VARS = {"room": room_id, "participant": participant_id, "request": request_id}

logger = logging.getLogger("signalling.http")


def bind(*, room: Optional[str] = None, participant: Optional[str] = None, request: Optional[str] = None) -> None:
    """From here on, lines logged by this task (and tasks it creates later) carry these ids (None: unchanged)."""
    for var, value in ((room_id, room), (participant_id, participant), (request_id, request)):
        if value is not None:
            var.set(value)


def current() -> dict[str, str]:
    """The ids known here, by field name."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


class ContextFilter(logging.Filter):
    """Puts the context's ids on every record (an id given with `extra=` is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if getattr(record, name, None) is None:
                setattr(record, name, var.get())
        return True


def new_request_id() -> str:
    return secrets.token_hex(8)


def incoming_request_id(value: Optional[str]) -> Optional[str]:
    """The caller's id if it is safe to log and echo, else None."""
    return value if value is not None and _SAFE_REQUEST_ID.match(value) else None


@web.middleware
async def request_ids(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    rid = incoming_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
    request[REQUEST_ID_KEY] = rid
    request_id.set(rid)  # this request's own task: nothing else sees it
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if logger.isEnabledFor(logging.DEBUG):
            # the path only: a query may carry a signature (replay media URLs)
            logger.debug("%s %s -> %d in %.1f ms", request.method, request.path, status,
                         (time.monotonic() - started) * 1000)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response of a request (errors and the WebSocket 101 too) names its id."""
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
