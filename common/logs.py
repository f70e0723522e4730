"""Logging set up once per entry point: JSON lines for machines, text for people.

Log calls pass context through `extra`, for example
`logger.info("task accepted", extra={"task_id": task_id})`; the message is the event.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "event": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{key}={value}" for key, value in _context(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {self.service} {record.getMessage()}"
        if context:
            line = f"{line} {context}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def configure_logging(*, service: str, level: str, fmt: str) -> None:
    """Send every record to stderr in the chosen format; replaces any earlier setup."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else TextFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Uvicorn's own loggers propagate to ours, so its lines share the format.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # No access lines: uvicorn writes one per request whenever this logger reaches a handler
    # (in every process of API_WORKERS > 1 too), a cost on every request for what the task
    # events already say. Whoever wants them can attach a handler to "uvicorn.access".
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    logging.getLogger("aiormq").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logging.getLogger("aio_pika").setLevel(max(logging.getLevelName(level), logging.WARNING))
    # aiormq logs every failed connect at ERROR, and every lost one with a traceback; the
    # broker link logs both itself, as warnings with the reason (common.amqp.link).
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
