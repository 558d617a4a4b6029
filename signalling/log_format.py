"""How the server's log lines look (`--log-format`), and the mask that keeps secrets out of them.

`text` (the default) is the format the server always had:
`2026-12-08 10:11:12,345 INFO signalling.app: message`. `json` is one JSON object a line
for a log collector:

    {"time": "2026-12-08T10:11:12.345Z", "level": "INFO", "logger": "signalling.app",
     "message": "…", "room": "demo", "participant": "p-1a2b3c4d5e6f", "request": "9f86d081884c7d65"}

`time` is UTC with milliseconds; `message` is the formatted message; `room`, `participant`
and `request` (signalling/log_context.py) are there when the line was logged where they are
known; `exception` holds the formatted traceback when there is one (`stack` a stack, when
asked for). Text other than ASCII is written as it is (names in Chinese stay readable).

The code does not log secrets (join tokens, the admin key, the token and webhook secrets,
TURN credentials, signed replay URLs); `redact` is the safety net behind that, in both
formats, for whatever looks like one: a JWT (a join token), a `whsec_` secret, a `Bearer`
value, a `token=`/`sig=`/`credential=`/… query value, a quoted `"credential": "…"`-style
value, an SDP `a=ice-pwd:`. Each becomes `[redacted]`.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Optional, TextIO

from .log_context import CONTEXT_FIELDS, ContextFilter

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"

_SECRET_NAMES = r"(?:(?:access_|id_|refresh_)?token|sig|signature|credential|password|passwd|secret|api_?key)"
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a JWT: its header is base64url JSON, so it starts eyJ ('{"'); three dot-separated segments
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"whsec_[A-Za-z0-9+/=_-]{8,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {REDACTED}"),
    # query (or fragment) values: ?sig=…&exp=…, #token=…, password=…
    (re.compile(rf"(?i)(?<![A-Za-z0-9_])({_SECRET_NAMES}=)[^&\s\"'<>]+"), rf"\1{REDACTED}"),
    (re.compile(r"(?i)([?&]key=)[^&\s\"'<>]+"), rf"\1{REDACTED}"),
    # a dict or JSON with such a key: {'credential': '…'}, "token": "…"
    (re.compile(rf"""(?i)(["']{_SECRET_NAMES}["']\s*:\s*["'])[^"']*"""), rf"\1{REDACTED}"),
    (re.compile(r"(a=ice-pwd:)\S+"), rf"\1{REDACTED}"),
)
# Besides \n and \r (which JSON escapes), Python's str.splitlines and some collectors end a line here.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def redact(text: str) -> str:
    """`text` with anything that looks like a secret replaced by [redacted]."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


class TextFormatter(logging.Formatter):
    """The classic one-line format, masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module docstring), masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for field in CONTEXT_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                entry[field] = redact(str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        line = json.dumps(entry, ensure_ascii=False, default=str)
        for char, escaped in _LINE_BREAKS.items():
            if char in line:
                line = line.replace(char, escaped)
        return line


def formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"the log format is one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(level: str, log_format: str = "text") -> None:
    """The process's logging (run.py): one stderr handler with the context filter and the format.

    Like logging.basicConfig, it does nothing when the root logger has a handler already (a test
    harness's). Raises ValueError for an unknown level or format. In `json` every line on stderr
    is JSON: warnings and uncaught exceptions (main thread and others) are logged, and whatever
    else reaches file descriptor 2 (MediaPipe's and other C libraries' own messages, the replay
    render workers' stray output) is relayed line by line as `stderr` records."""
    chosen = formatter(log_format)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(_relay_native_stderr() if log_format == "json" else None)
    handler.setFormatter(chosen)
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(numeric)
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


MAX_RELAYED_LINE = 16 * 1024


def _relay_native_stderr() -> TextIO:
    """Points file descriptor 2 at a pipe whose lines a thread logs; returns the real stderr for the handler.

    Native code (MediaPipe's glog and TFLite, libav) and child processes write to fd 2 directly,
    past Python's logging: their lines would break a collector's one-JSON-object-a-line."""
    real = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    relay = threading.Thread(target=_relay, args=(read_fd,), name="stderr-relay", daemon=True)
    relay.start()
    atexit.register(_end_relay, real, relay)
    return real


def _end_relay(real: TextIO, relay: threading.Thread) -> None:
    """At exit: fd 2 back to the real stderr, which closes the pipe, and the relay logs what is left."""
    os.dup2(real.fileno(), 2)
    relay.join(timeout=1.0)


def _relay(fd: int) -> None:
    log = logging.getLogger("stderr")
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if chunk:
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > MAX_RELAYED_LINE:
                lines, pending = [*lines, pending], b""
        else:  # every writer is gone
            lines, pending = [pending], b""
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                log.warning("%s", text)
        if not chunk:
            os.close(fd)
            return


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Optional[TracebackType]) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("consult-sfu").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("consult-sfu").error("uncaught exception in thread %s", name,
                                           exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
