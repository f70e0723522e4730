"""Logging set up once per entry point: JSON lines for machines, text for people.

Log calls pass context through `extra`, for example
`logger.info("task accepted", extra={"task_id": task_id})`; the message is the event. What a
whole request or a task's processing shares (request_id, trace_id, task_id) is bound once
instead (`bind`), and every record logged within it carries it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, cast

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",
}


# The fields bound in this context: a request's, a delivery's (contextvars, so each asyncio
# task has its own, and a task started within inherits them). Read when a record is formatted,
# which the handler does in the logging call.
_bound: ContextVar[Mapping[str, str]] = ContextVar("log_context", default=MappingProxyType({}))

Bound = Token[Mapping[str, str]]


def bind(**fields: str | None) -> Bound:
    """From now on in this context, every record carries `fields` (those not None) besides
    its own `extra`, which wins; `unbind` with the token undoes it, and any bind since."""
    if None in fields.values():
        present = {name: value for name, value in fields.items() if value is not None}
    else:
        present = cast("dict[str, str]", fields)
    current = _bound.get()
    return _bound.set({**current, **present} if current else present)


def unbind(token: Bound) -> None:
    _bound.reset(token)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    own = {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRS}
    bound = _bound.get()
    return {**bound, **own} if bound else own


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
