"""The worker's handler path against the fakes: results, permanent errors, timeouts, the
types' own attempt limits, progress merged to one write a second, and a type this worker has
no handler for."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from conftest import FakeDelivery, same_but_due

from common.messages import TaskMessage
from common.settings import load_settings
from common.tasks import EventKind, NewTask, TaskStatus
from handlers.context import PermanentTaskError, TaskContext
from models.outcomes import Outcome
from services.consumer import TaskConsumer
from services.processor import Handlers, encoded_result, process_task
from services.progress import ProgressWriter
from services.retry_policy import RetryPolicy
from services.running import RunningWork
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.polling import wait_until

pytestmark = pytest.mark.unit


async def stored(
    repository: InMemoryTaskRepository, task_type: str = "simulated", **fields: Any
) -> TaskMessage:
    task = NewTask(str(uuid.uuid4()), "t", "d", None, task_type, **fields)
    return TaskMessage.from_record(await repository.create(task))


async def run(
    repository: InMemoryTaskRepository,
    message: TaskMessage,
    handler: Any,
    *,
    type_name: str = "simulated",
    **settings: Any,
) -> Outcome:
    result = await process_task(
        repository=repository,
        message=message,
        handlers=Handlers({type_name: handler}, load_settings(**settings)),
        max_attempts=5,
        lease_seconds=60,
        take_over=False,
        running=RunningWork(),
    )
    return result.outcome


async def test_the_result_is_stored_with_completed() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)

    async def handle(ctx: TaskContext[Any]) -> Any:
        return {"answer": 42, "items": [1, "two", None]}

    assert await run(repository, message, handle) is Outcome.COMPLETED
    row = repository.rows[message.task_id]
    assert (row.status, row.result, row.progress) == (
        TaskStatus.COMPLETED,
        {"answer": 42, "items": [1, "two", None]},
        1.0,
    )


@pytest.mark.parametrize(
    ("result", "error"),
    [
        ("x" * 100, "ResultRefused: the result is 102 bytes of JSON, over RESULT_MAX_BYTES (64)"),
        ({1, 2}, "ResultRefused: the result is not JSON: Type is not JSON serializable: set"),
    ],
    ids=["too-large", "not-json"],
)
async def test_a_result_that_cannot_be_stored_fails_the_attempt(result: Any, error: str) -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)

    async def handle(ctx: TaskContext[Any]) -> Any:
        return result

    assert await run(repository, message, handle, result_max_bytes=64) is Outcome.RETRY
    row = repository.rows[message.task_id]
    assert (row.status, row.last_error, row.result) == (TaskStatus.PENDING, error, None)


def test_a_result_of_exactly_the_limit_is_stored() -> None:
    assert encoded_result("x" * 62, 64) == '"' + "x" * 62 + '"'
    assert encoded_result(None, 1) is None


async def test_a_permanent_error_fails_the_task_at_its_first_attempt() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)

    async def handle(ctx: TaskContext[Any]) -> Any:
        raise PermanentTaskError("album 42 does not exist")

    assert await run(repository, message, handle) is Outcome.FAILED
    row = repository.rows[message.task_id]
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 1)
    assert row.last_error == "PermanentTaskError: album 42 does not exist"


async def test_an_attempt_past_its_timeout_is_cancelled_and_retried() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository, timeout_seconds=1)
    stopped = asyncio.Event()

    async def handle(ctx: TaskContext[Any]) -> Any:
        assert 0 < ctx.remaining_seconds() <= 1
        try:
            await asyncio.sleep(30)
        finally:
            stopped.set()

    assert await asyncio.wait_for(run(repository, message, handle), timeout=5) is Outcome.RETRY
    assert stopped.is_set()
    row = repository.rows[message.task_id]
    assert row.last_error == "TimeoutError: the attempt timed out after 1 s"


async def test_a_timeout_of_the_handlers_own_is_its_own_error() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)

    async def handle(ctx: TaskContext[Any]) -> Any:
        raise TimeoutError("the upstream did not answer")

    assert await run(repository, message, handle) is Outcome.RETRY
    assert (
        repository.rows[message.task_id].last_error == "TimeoutError: the upstream did not answer"
    )


async def test_a_type_with_attempts_of_its_own_fails_after_them() -> None:
    # checksum allows 3 attempts, whatever MAX_ATTEMPTS says.
    repository = InMemoryTaskRepository()
    message = await stored(repository, "checksum", payload={"size_bytes": 1})

    async def handle(ctx: TaskContext[Any]) -> Any:
        raise OSError("disk full")

    outcomes = []
    for _ in range(3):
        outcomes.append(await run(repository, message, handle, type_name="checksum"))
    assert outcomes == [Outcome.RETRY, Outcome.RETRY, Outcome.FAILED]
    assert repository.rows[message.task_id].attempts == 3


async def test_the_handler_gets_its_validated_payload_and_attempt() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository, "hash_chain", payload={"rounds": 5})
    seen: list[Any] = []

    async def handle(ctx: TaskContext[Any]) -> Any:
        seen.append((ctx.task_id, ctx.payload.rounds, ctx.payload.seed, ctx.attempt))
        return None

    assert await run(repository, message, handle, type_name="hash_chain") is Outcome.COMPLETED
    assert seen == [(message.task_id, 5, "", 1)]


async def test_progress_is_written_at_once_then_merged_to_one_write_an_interval() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    writer = ProgressWriter(repository, message.task_id, 1, interval=0.2)

    writer.report(0.1, "first")
    assert progress_events(repository) == []  # written in the background: reporting never waits
    await wait_until(lambda: progress_count(repository, 1), timeout=2)
    for n in range(2, 10):  # within the interval: merged, the newest wins
        writer.report(n / 10, f"report {n}")
    await wait_until(lambda: progress_count(repository, 2), timeout=2)
    first, second = progress_events(repository)
    assert [(e.progress, e.note) for e in (first, second)] == [(0.1, "first"), (0.9, "report 9")]
    assert (second.created_at - first.created_at).total_seconds() >= 0.2
    await writer.close()


async def test_progress_not_yet_written_is_dropped_when_the_attempt_ends() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    writer = ProgressWriter(repository, message.task_id, 1, interval=30)
    writer.report(0.1, None)
    await wait_until(lambda: progress_count(repository, 1), timeout=2)
    writer.report(0.5, None)  # waits for the interval
    await asyncio.wait_for(writer.close(), timeout=1)
    assert [e.progress for e in progress_events(repository)] == [0.1]


async def test_progress_of_an_attempt_that_is_over_is_not_written() -> None:
    repository = InMemoryTaskRepository()
    message = await stored(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    assert not await repository.report_progress(message.task_id, attempt=2, progress=0.5, note=None)
    assert progress_events(repository) == []


def progress_events(repository: InMemoryTaskRepository) -> list[Any]:
    return [e for e in repository.events if e.kind is EventKind.PROGRESS]


async def progress_count(repository: InMemoryTaskRepository, count: int) -> bool:
    return len(progress_events(repository)) == count


@pytest.fixture
def consumer_without_handlers(
    repository: InMemoryTaskRepository, retries: RecordingPublisher
) -> TaskConsumer:
    return TaskConsumer(
        repository=repository,
        handlers=Handlers({}, load_settings()),
        policy=RetryPolicy(max_attempts=3, delays_seconds=(0.1, 0.4)),
        publisher=retries,
        lease_seconds=60,
        requeue_pause_seconds=0,
        unknown_type_max_attempts=3,
    )


async def test_a_type_without_a_handler_is_passed_on_then_failed_and_dead_lettered(
    consumer_without_handlers: TaskConsumer,
    repository: InMemoryTaskRepository,
    retries: RecordingPublisher,
) -> None:
    message = await stored(repository)
    first = FakeDelivery(message.encode())
    await consumer_without_handlers.on_delivery(first)
    assert first.settled == ["ack"]  # after its copy was confirmed
    [copy] = retries.sent
    assert (same_but_due(copy.message, message), copy.lookups) == (message, 1)
    assert repository.rows[message.task_id].status is TaskStatus.PENDING  # never claimed

    second = FakeDelivery(message.encode(), lookups=1)
    await consumer_without_handlers.on_delivery(second)
    assert retries.sent[-1].lookups == 2
    last = FakeDelivery(message.encode(), lookups=2)
    await consumer_without_handlers.on_delivery(last)
    assert last.settled == ["dead_letter"]
    row = repository.rows[message.task_id]
    assert row.status is TaskStatus.FAILED
    assert row.last_error == (
        "NoHandler: no worker that received the task has a handler for its type 'simulated'"
        " (3 tries, UNKNOWN_TYPE_MAX_ATTEMPTS)"
    )
