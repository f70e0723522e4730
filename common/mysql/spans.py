"""A span per statement and per script (common.mysql.connection), with tracing on.

By the OpenTelemetry semantic conventions for database client calls: named by the query's
summary (`UPDATE tasks`; a script's lists its statements'), with db.system.name,
db.namespace, db.operation.name, db.collection.name, server.address and the statement's text
(always parameterised here: it carries no values). Only within a sampled trace: the
dispatcher's and the housekeeping's polls outside any request or task make none, since each
would be a trace of its own, several a second, of nothing happening.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from common import tracing
from common.settings import DatabaseAddress

_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+`?([A-Za-z_][\w.]*)", re.IGNORECASE)
_NOTHING = contextlib.nullcontext()


@functools.lru_cache(maxsize=1024)
def summary(sql: str) -> tuple[str, str | None]:
    """(db.operation.name, db.collection.name) of a statement: its first keyword, and the
    first table it names after FROM, INTO or UPDATE (None when it names none)."""
    operation = sql.split(None, 1)[0].upper() if sql.strip() else "STATEMENT"
    table = _TABLE.search(sql)
    return operation, table.group(1) if table else None


def statement(sql: str, address: DatabaseAddress) -> contextlib.AbstractContextManager[object]:
    """Around one statement: its span, within a trace."""
    if not tracing.recording():
        return _NOTHING
    operation, table = summary(sql)
    name = f"{operation} {table}" if table else operation
    attributes = _common(address) | {"db.operation.name": operation, "db.query.summary": name}
    if table:
        attributes["db.collection.name"] = table
    return _span(name, attributes, sql)


def script(
    statements: Sequence[tuple[str, Sequence[object]]], sql: str, address: DatabaseAddress
) -> contextlib.AbstractContextManager[object]:
    """Around a script (several statements, each with its arguments, in one transaction and
    one round trip). Untraced, it costs one check: nothing is built for a span."""
    if not tracing.recording():
        return _NOTHING
    parts = [summary(text) for text, _ in statements]
    name = " ".join(f"{operation} {table}" for operation, table in parts if table) or "BATCH"
    attributes = _common(address) | {
        "db.operation.name": "BATCH",
        "db.operation.batch.size": len(statements),
        "db.query.summary": name,
    }
    return _span(name, attributes, sql)


def _common(address: DatabaseAddress) -> dict[str, AttributeValue]:
    return {
        "db.system.name": "mysql",
        "db.namespace": address.database,
        "server.address": address.host,
        "server.port": address.port,
    }


def _span(
    name: str, attributes: dict[str, AttributeValue], sql: str
) -> contextlib.AbstractContextManager[object]:
    attributes["db.query.text"] = sql
    return tracing.tracer(__name__).start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes=attributes
    )


class TracedCursor:
    """An asyncmy cursor whose every `execute` is a span (see `statement`)."""

    __slots__ = ("_address", "_cursor")

    def __init__(self, cursor: Any, address: DatabaseAddress) -> None:
        self._cursor = cursor
        self._address = address

    async def execute(self, sql: str, args: Any = None) -> Any:
        with statement(sql, self._address):
            return await self._cursor.execute(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)
