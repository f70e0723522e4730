"""The worker's transitions and how each delivery is settled, against the fake repository."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from conftest import FakeDelivery, RecordingWork

from common.messages import TaskMessage
from common.tasks import NewTask, TaskStatus
from models.outcomes import Outcome
from services.consumer import TaskConsumer
from services.processor import process_task
from services.work import simulated_work
from testkit.fakes import InMemoryTaskRepository

pytestmark = pytest.mark.unit


async def pending_task(repository: InMemoryTaskRepository) -> TaskMessage:
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", {"k": 1}))
    return TaskMessage.from_record(record)


async def test_pending_task_is_claimed_worked_and_completed(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)

    outcome = await process_task(
        repository=repository, message=message, work=work, lease_seconds=60, redelivered=False
    )

    assert outcome is Outcome.COMPLETED
    assert work.done == [message.task_id]
    row = repository.rows[message.task_id]
    assert row.status is TaskStatus.COMPLETED
    assert row.completed_at is not None
    assert row.attempts == 1
    assert repository.calls[-2:] == ["claim", "complete"]


async def test_second_delivery_of_a_completed_task_does_nothing(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    first, second = FakeDelivery(message.encode()), FakeDelivery(message.encode())

    await consumer.on_message(first.as_message())
    completed_at = repository.rows[message.task_id].completed_at
    await consumer.on_message(second.as_message())

    assert work.done == [message.task_id]
    assert repository.rows[message.task_id].completed_at == completed_at
    assert first.settled == second.settled == [("ack", None)]


async def test_duplicate_while_another_worker_holds_the_task_is_dropped(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)

    outcome = await process_task(
        repository=repository, message=message, work=work, lease_seconds=60, redelivered=False
    )

    assert outcome is Outcome.DUPLICATE
    assert work.done == []
    assert repository.rows[message.task_id].status is TaskStatus.PROCESSING


async def test_redelivery_takes_over_a_task_left_processing(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)  # then the worker died

    outcome = await process_task(
        repository=repository, message=message, work=work, lease_seconds=60, redelivered=True
    )

    assert outcome is Outcome.COMPLETED
    assert repository.rows[message.task_id].attempts == 2


async def test_expired_lease_lets_a_plain_duplicate_take_over(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=0, steal=False)

    outcome = await process_task(
        repository=repository, message=message, work=work, lease_seconds=60, redelivered=False
    )

    assert outcome is Outcome.COMPLETED


async def test_completion_is_written_once_when_two_holders_finish(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    assert await repository.complete(message.task_id)
    completed_at = repository.rows[message.task_id].completed_at

    assert not await repository.complete(message.task_id)
    assert repository.rows[message.task_id].completed_at == completed_at


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b"{}",
        b'{"task_id": 42}',
        b'{"task_id": "not-a-uuid"}',
        b'{"task_id": "0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5"}',
    ],
)
async def test_invalid_message_is_rejected_without_requeue(
    consumer: TaskConsumer, work: RecordingWork, body: bytes
) -> None:
    delivery = FakeDelivery(body)
    await consumer.on_message(delivery.as_message())
    assert delivery.settled == [("reject", False)]
    assert work.done == []


async def test_message_for_unknown_task_is_rejected(
    consumer: TaskConsumer, work: RecordingWork
) -> None:
    message = TaskMessage(str(uuid.uuid4()), "t", "d", None)
    delivery = FakeDelivery(message.encode())
    await consumer.on_message(delivery.as_message())
    assert delivery.settled == [("reject", False)]
    assert work.done == []


async def test_database_error_requeues_the_message(
    consumer: TaskConsumer, repository: InMemoryTaskRepository
) -> None:
    message = await pending_task(repository)
    repository.fail_with_unavailable()
    delivery = FakeDelivery(message.encode())

    await consumer.on_message(delivery.as_message())

    assert delivery.settled == [("nack", True)]


async def test_failing_work_requeues_and_leaves_the_task_unfinished(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    work.failure = ValueError("boom")
    delivery = FakeDelivery(message.encode())

    await consumer.on_message(delivery.as_message())

    assert delivery.settled == [("nack", True)]
    assert repository.rows[message.task_id].status is TaskStatus.PROCESSING
    assert consumer.in_flight == 0


async def test_ack_comes_after_the_completion_is_committed(
    consumer: TaskConsumer, repository: InMemoryTaskRepository
) -> None:
    message = await pending_task(repository)
    seen_at_ack: list[TaskStatus] = []

    class Probe(FakeDelivery):
        async def ack(self) -> None:
            seen_at_ack.append(repository.rows[message.task_id].status)
            await super().ack()

    await consumer.on_message(Probe(message.encode()).as_message())

    assert seen_at_ack == [TaskStatus.COMPLETED]


async def test_simulated_work_sleeps_within_the_range_without_blocking() -> None:
    work = simulated_work(0.05, 0.1)
    message = TaskMessage(str(uuid.uuid4()), "t", "d", None)
    started = time.monotonic()
    # Twenty at once finish in about one delay, not twenty: the loop is never blocked.
    await asyncio.gather(*(work(message) for _ in range(20)))
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 1.0
