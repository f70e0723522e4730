"""X-Request-ID, the W3C traceparent and the ids on the log records of a request.

The first tests use the app with the fakes; the last ones the app with its real lifespan
against the scratch database and vhost (no worker runs, so the published message is still in
the queue to be read), with tracing off and then on (an in-memory span exporter).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from test_submit import VALID

from common.logs import JsonFormatter
from common.settings import Settings
from common.tracing import start_tracing, stop_tracing
from main import create_app
from testkit.broker import take_all

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every record logged during the test, as the JSON formatter writes it."""
    records: list[dict[str, Any]] = []
    formatter = JsonFormatter("api")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(orjson.loads(formatter.format(record)))

    handler, root = Keep(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.unit
async def test_a_request_id_sent_is_echoed(client: httpx.AsyncClient) -> None:
    sent = {"X-Request-ID": "checkout-7f3a/2"}
    accepted = await client.post("/api/tasks", json=VALID, headers=sent)
    missing = await client.get(f"/api/tasks/{uuid.uuid4()}", headers=sent)

    assert accepted.status_code == 202
    assert accepted.headers["x-request-id"] == "checkout-7f3a/2"
    assert missing.status_code == 404  # a problem answer carries it too
    assert missing.headers["x-request-id"] == "checkout-7f3a/2"


@pytest.mark.unit
@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 201, "caf\u00e9"])
async def test_a_request_id_is_generated_when_none_usable_is_sent(
    client: httpx.AsyncClient, sent: str | None
) -> None:
    headers = {} if sent is None else {b"x-request-id": sent.encode()}
    first = await client.get("/api/task-types", headers=headers)
    second = await client.get("/api/task-types", headers=headers)

    generated = first.headers["x-request-id"]
    assert str(uuid.UUID(generated)) == generated
    assert uuid.UUID(generated).version == 4
    assert second.headers["x-request-id"] != generated


@pytest.mark.unit
async def test_records_of_a_request_carry_its_request_id_trace_id_and_task_id(
    client: httpx.AsyncClient, logged: list[dict[str, Any]]
) -> None:
    headers = {"X-Request-ID": "req-1", "traceparent": TRACEPARENT}
    task_id = (await client.post("/api/tasks", json=VALID, headers=headers)).json()["task_id"]
    await client.post("/api/tasks", json=VALID)  # no traceparent: no trace_id

    accepted = [record for record in logged if record["event"] == "task accepted"]
    assert len(accepted) == 2
    ids = {"request_id": "req-1", "trace_id": TRACE_ID, "task_id": task_id}
    assert accepted[0] | ids == accepted[0]
    assert "trace_id" not in accepted[1]
    assert str(uuid.UUID(accepted[1]["request_id"])) == accepted[1]["request_id"]
    logging.getLogger("tests").info("after the requests")
    assert not {"request_id", "trace_id", "task_id"} & logged[-1].keys()  # nothing left bound


@pytest.mark.unit
async def test_an_invalid_traceparent_is_ignored(
    client: httpx.AsyncClient, logged: list[dict[str, Any]]
) -> None:
    for broken in ("00-" + "0" * 32 + f"-{PARENT_ID}-01", "ff" + TRACEPARENT[2:], "nonsense"):
        response = await client.post("/api/tasks", json=VALID, headers={"traceparent": broken})
        assert response.status_code == 202
    assert all("trace_id" not in record for record in logged)


# With the real backends: the message the API published.


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"dispatch_interval_seconds": 0.1}


async def _published(
    client: httpx.AsyncClient, channel: AbstractChannel, settings: Settings, **headers: str
) -> tuple[str, AbstractIncomingMessage]:
    await take_all(channel, settings.task_queue)  # from an empty queue
    response = await client.post("/api/tasks", json=VALID, headers=headers)
    assert response.status_code == 202
    task_id: str = response.json()["task_id"]
    [message] = await take_all(channel, settings.task_queue)
    assert message.message_id == task_id
    return task_id, message


@pytest.fixture(scope="module")
async def live_client(direct: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its real lifespan, tracing off."""
    app = create_app(direct)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.mark.integration
async def test_without_tracing_the_traceparent_is_passed_on_as_received(
    live_client: httpx.AsyncClient, channel: AbstractChannel, direct: Settings
) -> None:
    _, message = await _published(
        live_client, channel, direct, traceparent=TRACEPARENT, tracestate="vendor=opaque"
    )
    headers = message.headers or {}
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == "vendor=opaque"

    _, untraced = await _published(live_client, channel, direct)
    assert "traceparent" not in (untraced.headers or {})


@pytest.fixture
async def traced_client(
    direct: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemorySpanExporter]]:
    """The app with its real lifespan, tracing on into an in-memory exporter."""
    exporter = InMemorySpanExporter()
    start_tracing(direct, service="task-api", exporter=exporter)
    try:
        app = create_app(direct)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                yield client, exporter
    finally:
        stop_tracing()


def _one(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = [span for span in spans if span.name == name]
    return span


@pytest.mark.integration
async def test_with_tracing_the_request_trace_is_continued_into_the_message(
    traced_client: tuple[httpx.AsyncClient, InMemorySpanExporter],
    channel: AbstractChannel,
    direct: Settings,
) -> None:
    client, exporter = traced_client
    task_id, message = await _published(client, channel, direct, traceparent=TRACEPARENT)

    spans = exporter.get_finished_spans()
    server = _one(spans, "POST /api/tasks")
    publish = _one(spans, f"publish {direct.task_queue}")
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None
    assert server.parent.span_id == int(PARENT_ID, 16)
    assert server.attributes is not None
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/api/tasks"
    assert server.attributes["http.response.status_code"] == 202
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == server.context.span_id
    assert publish.attributes is not None
    assert publish.attributes["messaging.system"] == "rabbitmq"
    assert publish.attributes["messaging.destination.name"] == direct.task_queue
    assert publish.attributes["messaging.message.id"] == task_id
    inserts = [span for span in spans if (span.attributes or {}).get("db.system.name")]
    assert inserts, "no database span"
    assert all(span.parent and span.parent.span_id == server.context.span_id for span in inserts)
    assert {span.context.trace_id for span in spans} == {int(TRACE_ID, 16)}

    # The worker continues from the publish span.
    header = (message.headers or {})["traceparent"]
    assert header == f"00-{TRACE_ID}-{publish.context.span_id:016x}-01"


@pytest.mark.integration
async def test_with_tracing_a_request_without_traceparent_starts_a_trace(
    traced_client: tuple[httpx.AsyncClient, InMemorySpanExporter],
    channel: AbstractChannel,
    direct: Settings,
) -> None:
    client, exporter = traced_client
    _, message = await _published(client, channel, direct)

    spans = exporter.get_finished_spans()
    server = _one(spans, "POST /api/tasks")
    publish = _one(spans, f"publish {direct.task_queue}")
    assert server.parent is None
    assert publish.context.trace_id == server.context.trace_id
    ids = publish.context
    continued = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
    assert (message.headers or {})["traceparent"] == continued
