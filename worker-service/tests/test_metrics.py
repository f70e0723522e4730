"""The worker's metrics against the fakes: outcomes by type, attempt and queue-wait
histograms, tasks in flight, reconnects, and GET /metrics on the port's route table."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from conftest import FakeDelivery, RecordingWork, handlers_of
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from api.app import RouteTable
from api.metrics import metrics_route
from common.messages import TaskMessage
from common.tasks import NewTask
from handlers.context import PermanentTaskError, TaskContext
from handlers.simulated import SimulatedFailure
from models.outcomes import Outcome
from services.consumer import TaskConsumer
from services.metrics import SECONDS_BUCKETS, WorkerMetrics
from testkit.fakes import InMemoryTaskRepository
from testkit.metrics import label_values, samples

pytestmark = pytest.mark.unit


@pytest.fixture
def metrics(consumer: TaskConsumer) -> WorkerMetrics:
    consumer.metrics = metrics = WorkerMetrics()
    metrics.count_in_flight(lambda: consumer.in_flight)
    return metrics


async def delivery_of(repository: InMemoryTaskRepository, **fields: object) -> FakeDelivery:
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None))
    message = TaskMessage.from_record(record)
    for name, value in fields.items():
        object.__setattr__(message, name, value)
    return FakeDelivery(message.encode())


async def scrape(metrics: WorkerMetrics) -> str:
    transport = httpx.ASGITransport(app=RouteTable({"/metrics": metrics_route(metrics)}))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        response = await client.get("/metrics")
        assert (await client.post("/metrics")).status_code == 405
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_outcomes_are_counted_by_type_and_attempts_timed(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    metrics: WorkerMetrics,
) -> None:
    ids = []
    for _ in range(3):
        delivery = await delivery_of(repository)
        ids.append(delivery.body)
        await consumer.on_delivery(delivery)
    work.failure = PermanentTaskError("bad input")
    await consumer.on_delivery(await delivery_of(repository))
    work.failure = SimulatedFailure("try again")
    await consumer.on_delivery(await delivery_of(repository))
    await consumer.on_delivery(FakeDelivery(b"not json"))
    completed = await delivery_of(repository)
    work.failure = None
    await consumer.on_delivery(completed)
    await consumer.on_delivery(FakeDelivery(completed.body))  # a duplicate of a final task

    text = await scrape(metrics)
    assert samples(text, "task_worker_tasks_finished_total") == {
        '{outcome="completed",type="simulated"}': 4,
        '{outcome="failed",type="simulated"}': 1,
        '{outcome="retried",type="simulated"}': 1,
        '{outcome="dead_lettered",type="unknown"}': 1,
        '{outcome="duplicate_skipped",type="simulated"}': 1,
    }
    assert samples(text, "task_worker_attempt_duration_seconds_count") == {'{type="simulated"}': 6}
    assert samples(text, "task_worker_queue_wait_seconds_count") == {'{type="simulated"}': 6}
    assert samples(text, "task_worker_tasks_in_flight") == {"": 0}
    values = label_values(text)
    assert not {value for value in values if len(value) == 36}  # no task id
    assert not any(task_id.decode() in text for task_id in ids)


async def test_queue_wait_counts_from_the_due_time_and_skips_messages_without_one(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, metrics: WorkerMetrics
) -> None:
    await consumer.on_delivery(await delivery_of(repository, due_at=time.time() - 30))
    await consumer.on_delivery(await delivery_of(repository, due_at=None))

    text = await scrape(metrics)
    assert samples(text, "task_worker_queue_wait_seconds_count") == {'{type="simulated"}': 1}
    [wait] = samples(text, "task_worker_queue_wait_seconds_sum").values()
    assert 30 <= wait < 40
    buckets = samples(text, "task_worker_queue_wait_seconds_bucket")
    assert buckets['{le="10.0",type="simulated"}'] == 0
    assert buckets['{le="60.0",type="simulated"}'] == 1


async def test_a_type_not_in_the_catalogue_is_labelled_unknown(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, metrics: WorkerMetrics
) -> None:
    delivery = await delivery_of(repository, type="user-made-up-type")
    consumer.unknown_type_max_attempts = 1
    await consumer.on_delivery(delivery)

    text = await scrape(metrics)
    assert "user-made-up-type" not in text
    assert samples(text, "task_worker_tasks_finished_total") == {
        '{outcome="dead_lettered",type="unknown"}': 1
    }


def test_a_backend_back_after_being_lost_is_one_reconnect() -> None:
    metrics = WorkerMetrics()
    metrics.backend_state("broker", up=False)  # not yet connected at start: no reconnect
    metrics.backend_state("broker", up=True)
    metrics.backend_state("broker", up=True)
    metrics.backend_state("database", up=True)
    metrics.backend_state("database", up=False)
    metrics.backend_state("database", up=False)
    metrics.backend_state("database", up=True)

    text = metrics.exposition().decode()
    assert samples(text, "task_worker_reconnects_total") == {
        '{backend="database"}': 1,
        '{backend="broker"}': 0,
    }


async def test_tasks_in_flight_counts_the_deliveries_being_processed(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    metrics: WorkerMetrics,
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def held(ctx: TaskContext[Any]) -> None:
        started.set()
        await release.wait()

    consumer.handlers = handlers_of(held)  # type: ignore[arg-type]
    running = asyncio.create_task(consumer.on_delivery(await delivery_of(repository)))
    await asyncio.wait_for(started.wait(), timeout=5)
    assert samples(await scrape(metrics), "task_worker_tasks_in_flight") == {"": 1}
    release.set()
    await asyncio.wait_for(running, timeout=5)
    assert samples(await scrape(metrics), "task_worker_tasks_in_flight") == {"": 0}


def test_the_histograms_read_as_prometheus_clients_own_would() -> None:
    """The worker keeps its histograms as plain numbers: fed the same values, including each
    bucket's bound itself and values past the last, they expose what a prometheus-client
    Histogram with the same buckets does."""
    values = [0.0, 0.001, 0.005, 0.0051, 0.3, 1.0, 9.99, 10.0, 599.0, 600.0, 600.5, 4000.0]
    metrics = WorkerMetrics()
    reference = CollectorRegistry()
    histogram = Histogram(
        "task_worker_attempt_duration_seconds",
        "reference",
        ["type"],
        buckets=SECONDS_BUCKETS,
        registry=reference,
    )
    for seconds in values:
        metrics.processed(
            "simulated", Outcome.COMPLETED, claimed_at=0.0, seconds=seconds, due_at=None
        )
        histogram.labels("simulated").observe(seconds)

    ours, theirs = metrics.exposition().decode(), generate_latest(reference).decode()
    for series in ("_bucket", "_count", "_sum"):
        name = f"task_worker_attempt_duration_seconds{series}"
        assert samples(ours, name) == samples(theirs, name)
    assert len(samples(ours, "task_worker_attempt_duration_seconds_bucket")) == 17
