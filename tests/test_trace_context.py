"""The pieces of tracing and log correlation on their own: the traceparent check, what is
passed on with tracing off, the fields bound to log records, the spans of a delivery and of
a statement, and the batch writer that serves many callers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from common import tracing
from common.amqp.spans import processing
from common.batching import Batcher
from common.logs import JsonFormatter, TextFormatter, bind, unbind
from common.mysql.spans import summary
from common.settings import load_settings

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TASK_ID = "5f0c8f8e-1111-4000-8000-000000000000"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    tracing.start_tracing(load_settings(), service="tests", exporter=spans)
    try:
        yield spans
    finally:
        tracing.stop_tracing()


@dataclass
class FakeIncoming:
    """What `processing` reads of an aio-pika delivery."""

    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = TASK_ID
    body_size: int = 100
    delivery_tag: int | None = 1


def json_line(**extra: Any) -> dict[str, Any]:
    entry = logging.makeLogRecord({"msg": "event", "levelno": 20, "levelname": "INFO", **extra})
    parsed: dict[str, Any] = orjson.loads(JsonFormatter("tests").format(entry))
    return parsed


@pytest.mark.parametrize(
    ("traceparent", "trace_id"),
    [
        (TRACEPARENT, TRACE_ID),
        (f" {TRACEPARENT}\t", TRACE_ID),
        (f"01-{TRACE_ID}-00f067aa0ba902b7-01-later-fields", TRACE_ID),  # a later version
        (f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra", None),  # version 00 has no more fields
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (TRACEPARENT.upper(), None),
        (f"00-{TRACE_ID[:-1]}-00f067aa0ba902b7-01", None),
        ("", None),
        (None, None),
        (TRACEPARENT + "-" + "x" * 500, None),
    ],
)
def test_only_a_valid_traceparent_has_a_trace_id(traceparent: str | None, trace_id: str) -> None:
    assert tracing.trace_id_of(traceparent) == trace_id


def test_without_tracing_a_valid_traceparent_is_passed_on_as_received() -> None:
    assert not tracing.is_on()
    trace_id, received = tracing.receive(f" {TRACEPARENT}", "vendor=opaque")
    try:
        assert trace_id == TRACE_ID
        headers: dict[str, Any] = {"x-task-attempts": 0}
        tracing.inject(headers)
        assert headers == {
            "x-task-attempts": 0,
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=opaque",
        }
    finally:
        tracing.leave(received)
    after: dict[str, Any] = {}
    tracing.inject(after)
    assert after == {}

    trace_id, received = tracing.receive("00-nonsense", "vendor=opaque")
    tracing.inject(after)
    tracing.leave(received)
    assert (trace_id, after) == (None, {})


def test_bound_fields_are_on_every_record_until_unbound() -> None:
    token = bind(request_id="r-1", trace_id=TRACE_ID, task_id=None)
    try:
        line = json_line()
        own = json_line(trace_id="its own")
        text = TextFormatter("tests").format(logging.makeLogRecord({"msg": "event"}))
    finally:
        unbind(token)
    assert (line["request_id"], line["trace_id"]) == ("r-1", TRACE_ID)
    assert "task_id" not in line  # None is not bound
    assert own["trace_id"] == "its own"  # a record's own extra wins
    assert text.endswith(f"event request_id=r-1 trace_id={TRACE_ID}")
    assert "request_id" not in json_line()


async def test_tasks_started_while_fields_are_bound_inherit_them() -> None:
    lines: list[dict[str, Any]] = []

    async def log() -> None:
        lines.append(json_line())

    token = bind(task_id=TASK_ID)
    await asyncio.create_task(log())
    unbind(token)
    await asyncio.create_task(log())
    assert [line.get("task_id") for line in lines] == [TASK_ID, None]


async def test_the_batch_writer_does_not_log_as_the_caller_that_started_it() -> None:
    seen: list[dict[str, Any]] = []

    async def write(items: list[int]) -> list[int]:
        seen.append(json_line())
        return items

    batcher: Batcher[int, int] = Batcher(write, max_batch=10)
    token = bind(task_id=TASK_ID)
    assert await batcher.submit(1) == 1
    unbind(token)
    assert "task_id" not in seen[0]


async def test_with_tracing_a_batch_is_written_as_a_child_of_its_first_callers_span(
    exporter: InMemorySpanExporter,
) -> None:
    tracer = tracing.tracer(__name__)

    async def write(items: list[str]) -> list[str]:
        with tracer.start_as_current_span("write"):
            await asyncio.sleep(0)
        return items

    batcher: Batcher[str, str] = Batcher(write, max_batch=10)

    async def call(name: str) -> str:
        with tracer.start_as_current_span(name):
            return await batcher.submit(name)

    assert list(await asyncio.gather(call("first"), call("second"))) == ["first", "second"]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert spans["write"].parent == spans["first"].context
    assert spans["second"].context.trace_id != spans["first"].context.trace_id


async def test_without_tracing_a_delivery_logs_its_task_and_trace_and_passes_them_on() -> None:
    message = cast(AbstractIncomingMessage, FakeIncoming({"traceparent": TRACEPARENT.encode()}))
    headers: dict[str, Any] = {}
    with processing(message, queue="task_queue"):
        line = json_line()
        tracing.inject(headers)
    assert (line["task_id"], line["trace_id"]) == (TASK_ID, TRACE_ID)
    assert headers == {"traceparent": TRACEPARENT}

    untraced = cast(AbstractIncomingMessage, FakeIncoming())
    with processing(untraced, queue="task_queue"):
        line = json_line()
    assert line["task_id"] == TASK_ID
    assert "trace_id" not in line


async def test_with_tracing_a_delivery_is_a_consumer_span_continuing_the_message_trace(
    exporter: InMemorySpanExporter,
) -> None:
    message = cast(AbstractIncomingMessage, FakeIncoming({"traceparent": TRACEPARENT}))
    headers: dict[str, Any] = {}
    with processing(message, queue="task_queue"):
        line = json_line()
        tracing.inject(headers)
    [span] = exporter.get_finished_spans()

    assert (span.name, span.kind) == ("process task_queue", SpanKind.CONSUMER)
    assert span.parent is not None
    assert span.parent.span_id == 0x00F067AA0BA902B7
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert dict(span.attributes or {}) | {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": "task_queue",
        "messaging.message.id": TASK_ID,
        "messaging.operation.type": "process",
    } == dict(span.attributes or {})
    assert (line["task_id"], line["trace_id"]) == (TASK_ID, TRACE_ID)
    # What the processing publishes continues from this span.
    assert headers["traceparent"] == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE tasks SET status = 'COMPLETED' WHERE id IN (%s)", ("UPDATE", "tasks")),
        ("INSERT INTO task_events (task_id) SELECT id FROM tasks", ("INSERT", "task_events")),
        ("  select id from tasks where id = %s", ("SELECT", "tasks")),
        ("DELETE FROM idempotency_keys WHERE expires_at < %s", ("DELETE", "idempotency_keys")),
        ("SELECT COUNT(*) FROM information_schema.tables", ("SELECT", "information_schema.tables")),
        ("SET @moved = ROW_COUNT()", ("SET", None)),
        ("SELECT 1", ("SELECT", None)),
        ("BEGIN", ("BEGIN", None)),
    ],
)
def test_a_statement_is_summarised_by_its_operation_and_table(
    sql: str, expected: tuple[str, str | None]
) -> None:
    assert summary(sql) == expected
