"""A task's trace from the API into the worker, against the real MySQL/MariaDB and RabbitMQ.

- Both services as processes with JSON logs and tracing off: the traceparent a client sends
  reaches the worker in the message's headers, and the worker's records of the task carry
  its trace id and the task id.
- The same with OTEL_EXPORTER_OTLP_ENDPOINT pointed at a stand-in collector
  (testkit/collector.py): the two processes export one trace.
- Both services in this process (testkit/inprocess.py) with an in-memory span exporter, since
  processes cannot share one: the same trace, span by span.

Each test starts its own services, so that no other worker takes its task.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.settings import Settings
from common.task_types import CATALOGUE
from common.tracing import start_tracing, stop_tracing
from testkit.collector import collecting
from testkit.inprocess import load_main
from testkit.polling import api_healthy, wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

TASK = {"title": "Traced", "description": "follow me", "metadata": None}


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "processing_delay_min_seconds": 0.1,
        "processing_delay_max_seconds": 0.2,
        "log_format": "json",
        "worker_health_port": 0,  # any free one: other workers may run on this host
    }


@dataclass(frozen=True)
class Trace:
    """A trace a client started: the traceparent it sends with its request."""

    trace_id: str
    span_id: str

    @classmethod
    def new(cls) -> Trace:
        return cls(uuid.uuid4().hex, os.urandom(8).hex())

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-01"


@dataclass
class Stack:
    client: httpx.AsyncClient
    logs: Path

    def records(self, service: str) -> list[dict[str, Any]]:
        """The JSON records `service` ("api" or "worker") has logged so far."""
        lines = (self.logs / f"{service}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@asynccontextmanager
async def running(
    settings: Settings, logs: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Stack]:
    """The API and a worker as processes, until the block ends."""
    port = free_port()
    environment = {**service_environment(settings), "API_PORT": str(port), **(env or {})}
    with (
        service_process("api-service", environment, logs / "api.log") as api,
        service_process("worker-service", environment, logs / "worker.log") as worker,
    ):
        async with api_client(f"http://127.0.0.1:{port}") as client:

            async def up() -> bool:
                assert api.poll() is None, (logs / "api.log").read_text()
                assert worker.poll() is None, (logs / "worker.log").read_text()
                return await api_healthy(client)

            await wait_until(up, timeout=30, interval=0.1, what="API /health")
            yield Stack(client, logs)


async def submit_and_complete(client: httpx.AsyncClient, trace: Trace, request_id: str) -> str:
    headers = {"traceparent": trace.traceparent, "X-Request-ID": request_id}
    response = await client.post("/api/tasks", json=TASK, headers=headers)
    assert response.status_code == 202
    assert response.headers["x-request-id"] == request_id
    task_id: str = response.json()["task_id"]

    async def completed() -> bool:
        status: str = (await client.get(f"/api/tasks/{task_id}")).json()["status"]
        return status == "COMPLETED"

    await wait_until(completed, timeout=30, interval=0.1, what=f"{task_id} COMPLETED")
    return task_id


async def records_of(stack: Stack, service: str, task_id: str, last: str) -> list[dict[str, Any]]:
    """`service`'s records of the task, once the one with event `last` is written."""

    async def written() -> list[dict[str, Any]] | None:
        ours = [r for r in stack.records(service) if r.get("task_id") == task_id]
        return ours if any(r["event"] == last for r in ours) else None

    return await wait_until(written, timeout=10, what=f"{service} logged {last!r}")


async def test_without_tracing_the_workers_records_of_a_task_carry_its_trace_and_task_id(
    direct: Settings, tmp_path: Path
) -> None:
    trace = Trace.new()
    async with running(direct, tmp_path) as stack:
        task_id = await submit_and_complete(stack.client, trace, "e2e-logs")
        worker = await records_of(stack, "worker", task_id, "task completed")
        api = await records_of(stack, "api", task_id, "task accepted")

    assert {"task claimed", "task completed"} <= {record["event"] for record in worker}
    assert [record.get("trace_id") for record in worker] == [trace.trace_id] * len(worker)
    for record in api:
        assert (record["trace_id"], record["request_id"]) == (trace.trace_id, "e2e-logs")


class SpanLike(Protocol):
    """What these tests read of a span, exported over OTLP or kept in memory."""

    @property
    def name(self) -> str: ...
    @property
    def trace_id(self) -> str: ...
    @property
    def span_id(self) -> str: ...
    @property
    def parent_span_id(self) -> str: ...
    @property
    def attributes(self) -> dict[str, Any]: ...


S = TypeVar("S", bound=SpanLike)


def is_completion(span: SpanLike) -> bool:
    return span.name.startswith("UPDATE tasks") and "'COMPLETED'" in str(
        span.attributes.get("db.query.text")
    )


def assert_one_trace(spans: Sequence[S], trace: Trace, task_id: str) -> list[S]:
    """The request's server span (a child of the client's), the publish, the worker's
    processing and its completion statement, each a child of the one before, in the
    client's trace; returns them in that order."""
    ours = [span for span in spans if span.trace_id == trace.trace_id]

    def one(matches: Callable[[S], bool], what: str) -> S:
        found = [span for span in ours if matches(span)]
        assert len(found) == 1, f"{what}: {[span.name for span in ours]}"
        return found[0]

    server = one(lambda span: span.name == "POST /api/tasks", "the POST's server span")
    publish = one(lambda span: span.name == "publish task_queue", "the publish span")
    process = one(lambda span: span.name == "process task_queue", "the process span")
    completion = one(is_completion, "the completion statement's span")
    assert server.parent_span_id == trace.span_id
    assert publish.parent_span_id == server.span_id
    assert process.parent_span_id == publish.span_id
    assert completion.parent_span_id == process.span_id
    assert server.attributes["http.route"] == "/api/tasks"
    assert server.attributes["http.response.status_code"] == 202
    for span in (publish, process):
        assert span.attributes["messaging.system"] == "rabbitmq"
        assert span.attributes["messaging.message.id"] == task_id
    assert completion.attributes["db.system.name"] == "mysql"
    return [server, publish, process, completion]


async def test_with_an_otlp_endpoint_both_processes_export_one_trace(
    direct: Settings, tmp_path: Path
) -> None:
    trace = Trace.new()
    with collecting() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        async with running(direct, tmp_path, env) as stack:
            task_id = await submit_and_complete(stack.client, trace, "e2e-otlp")
            spans = await collector.wait_for(
                lambda spans: any(is_completion(span) for span in spans),
                timeout=15,
                what="the completion's span",
            )
            worker = await records_of(stack, "worker", task_id, "task completed")

    chain = assert_one_trace(spans, trace, task_id)
    assert [span.kind for span in chain] == ["SERVER", "PRODUCER", "CONSUMER", "CLIENT"]
    assert [span.service for span in chain] == ["task-api", "task-api"] + ["task-worker"] * 2
    assert {record.get("trace_id") for record in worker} == {trace.trace_id}


@dataclass(frozen=True)
class MemorySpan:
    """An SDK span as SpanLike reads it."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


@pytest.fixture
def exporter(direct: Settings) -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    start_tracing(direct, service="task-service", exporter=spans)
    try:
        yield spans
    finally:
        stop_tracing()


def in_memory(exporter: InMemorySpanExporter) -> list[MemorySpan]:
    return [
        MemorySpan(
            name=span.name,
            trace_id=f"{span.context.trace_id:032x}",
            span_id=f"{span.context.span_id:016x}",
            parent_span_id="" if span.parent is None else f"{span.parent.span_id:016x}",
            attributes=dict(span.attributes or {}),
        )
        for span in exporter.get_finished_spans()
        if span.context is not None
    ]


async def test_in_memory_one_trace_covers_the_post_the_publish_the_processing_and_completion(
    direct: Settings, exporter: InMemorySpanExporter
) -> None:
    api = load_main("api-service")
    # The worker imports its handlers as it starts.
    worker = load_main("worker-service", preload=[f"handlers.{name}" for name in CATALOGUE])
    app = api.create_app(direct)
    stop = asyncio.Event()
    trace = Trace.new()
    async with app.router.lifespan_context(app):
        consuming = asyncio.create_task(worker.run_worker(direct, stop))
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                task_id = await submit_and_complete(client, trace, "in-process")

            async def completion_exported() -> bool:
                return any(is_completion(span) for span in in_memory(exporter))

            await wait_until(completion_exported, timeout=10, what="the completion's span")
        finally:
            stop.set()
            await consuming

    assert_one_trace(in_memory(exporter), trace, task_id)
