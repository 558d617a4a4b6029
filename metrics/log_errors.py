"""Errors by type: a logging handler counting WARNING and worse records.

The server reports what goes wrong through logging (a failed processor, a recording
stopped, a session that raised, aiortc's and aiohttp's own complaints); counting the
records by level, logger and exception class gives "errors by type" without touching
the code that handles them. Labels are bounded by the code (logger names, exception
classes), never by what a message says. Installed on the root logger while the app
runs; records from loggers that do not propagate are not seen.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter


class LogRecordCounter(logging.Handler):
    def __init__(self, registry: CollectorRegistry, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.counter = Counter("consult_log_messages", "Log records at WARNING or worse, by level, logger and "
                               "exception class ('' without an exception)", ["level", "logger", "exception"],
                               registry=registry)

    def emit(self, record: logging.LogRecord) -> None:
        exception = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] is not None else ""
        self.counter.labels(record.levelname, record.name, exception).inc()

    def install(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).addHandler(self)

    def uninstall(self, logger: logging.Logger | None = None) -> None:
        (logger or logging.getLogger()).removeHandler(self)
