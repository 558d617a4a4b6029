"""Errors by type: WARNING and worse records counted by level, logger and exception class."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from metrics.log_errors import LogRecordCounter


def test_warnings_and_errors_are_counted_by_logger_and_exception_and_info_is_not():
    registry = CollectorRegistry()
    counter = LogRecordCounter(registry)
    counter.install()
    try:
        log = logging.getLogger("media.test_component")
        log.info("not counted")
        log.warning("a warning about %s", "participant p-123")  # the message never becomes a label
        log.warning("another")
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")
    finally:
        counter.uninstall()
    logging.getLogger("media.test_component").error("after uninstall: not counted")

    def value(level: str, exception: str = "") -> float | None:
        return registry.get_sample_value("consult_log_messages_total", {
            "level": level, "logger": "media.test_component", "exception": exception})

    assert value("WARNING") == 2
    assert value("ERROR", "ValueError") == 1
    assert value("ERROR") is None
    assert value("INFO") is None
    assert counter not in logging.getLogger().handlers
