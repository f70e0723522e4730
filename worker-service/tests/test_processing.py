"""The worker's transitions and how each delivery is settled, against the fakes."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from conftest import FakeDelivery, RecordingWork, handlers_of, same_but_due

from common.messages import TaskMessage
from common.tasks import NewTask, TaskStatus
from handlers.simulated import SimulatedFailure
from models.outcomes import Outcome
from services.consumer import TaskConsumer
from services.processor import error_summary, process_task
from services.running import RunningWork
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.polling import wait_until

pytestmark = pytest.mark.unit

ACK = ["ack"]
DEAD_LETTER = ["dead_letter"]
REQUEUE = ["requeue"]


async def pending_task(repository: InMemoryTaskRepository) -> TaskMessage:
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", {"k": 1}))
    return TaskMessage.from_record(record)


async def process(
    repository: InMemoryTaskRepository,
    message: TaskMessage,
    work: RecordingWork,
    *,
    take_over: bool = False,
) -> Outcome:
    result = await process_task(
        repository=repository,
        message=message,
        handlers=handlers_of(work),
        max_attempts=3,
        lease_seconds=60,
        take_over=take_over,
        running=RunningWork(),
    )
    return result.outcome


async def test_pending_task_is_claimed_worked_and_completed(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)

    assert await process(repository, message, work) is Outcome.COMPLETED

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

    await consumer.on_delivery(first)
    completed_at = repository.rows[message.task_id].completed_at
    await consumer.on_delivery(second)

    assert work.done == [message.task_id]
    assert repository.rows[message.task_id].completed_at == completed_at
    assert first.settled == second.settled == ACK


async def test_duplicate_while_another_worker_holds_the_task_is_not_worked(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)

    assert await process(repository, message, work) is Outcome.DUPLICATE
    assert work.done == []
    assert repository.rows[message.task_id].status is TaskStatus.PROCESSING


async def test_a_duplicate_comes_back_after_the_lease_so_a_vanished_holder_is_taken_over(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    retries: RecordingPublisher,
) -> None:
    # A claim whose worker is gone (killed right after it, or a claim that reached the
    # database after its worker had given up): this delivery may be the task's last message.
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=0.05, steal=False)
    duplicate = FakeDelivery(message.encode(), lookups=1)

    await consumer.on_delivery(duplicate)

    assert duplicate.settled == ACK  # only after its copy was confirmed
    [copy] = retries.sent
    assert (same_but_due(copy.message, message), copy.attempts, copy.lookups) == (message, 0, 1)
    assert copy.delay_seconds == consumer.lease_seconds
    await wait_until(lambda: lease_expired(repository, message.task_id), timeout=2)
    await consumer.on_delivery(FakeDelivery(copy.message.encode()))  # the copy, after the lease
    assert repository.rows[message.task_id].status is TaskStatus.COMPLETED
    assert work.done == [message.task_id]


async def lease_expired(repository: InMemoryTaskRepository, task_id: str) -> bool:
    return repository.leases[task_id] < datetime.now(UTC)


async def test_a_duplicate_that_cannot_be_postponed_is_requeued(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, retries: RecordingPublisher
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    retries.fail = True
    duplicate = FakeDelivery(message.encode())

    await consumer.on_delivery(duplicate)

    assert duplicate.settled == REQUEUE


async def test_take_over_claims_a_task_left_processing(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)  # then the worker died

    assert await process(repository, message, work, take_over=True) is Outcome.COMPLETED
    assert repository.rows[message.task_id].attempts == 2


@pytest.mark.parametrize(
    ("redelivered", "attempts"),
    [(True, 0), (False, 1)],
    ids=["redelivery", "retry"],
)
async def test_redelivery_or_retry_message_takes_over(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    redelivered: bool,
    attempts: int,
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    delivery = FakeDelivery(message.encode(), redelivered=redelivered, attempts=attempts)

    await consumer.on_delivery(delivery)

    assert delivery.settled == ACK
    assert repository.rows[message.task_id].status is TaskStatus.COMPLETED


async def test_expired_lease_lets_a_plain_duplicate_take_over(
    repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=0, steal=False)

    assert await process(repository, message, work) is Outcome.COMPLETED


async def test_completion_is_written_once_when_two_holders_finish(
    repository: InMemoryTaskRepository,
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    assert await repository.complete(message.task_id)
    completed_at = repository.rows[message.task_id].completed_at

    assert not await repository.complete(message.task_id)
    assert repository.rows[message.task_id].completed_at == completed_at


async def test_failed_attempt_is_recorded_and_retried_after_a_backoff(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    retries: RecordingPublisher,
) -> None:
    message = await pending_task(repository)
    work.failure = SimulatedFailure("disk full\nsecret trace")
    delivery = FakeDelivery(message.encode())

    await consumer.on_delivery(delivery)

    assert delivery.settled == ACK  # acked only after the retry copy was confirmed
    row = repository.rows[message.task_id]
    assert (row.status, row.attempts) == (TaskStatus.PENDING, 1)
    assert row.last_error == "SimulatedFailure: disk full"
    [copy] = retries.sent
    assert (same_but_due(copy.message, message), copy.attempts, copy.lookups) == (message, 1, 0)
    # Equal jitter: the delay lies within the upper half of the first backoff (0.1 s).
    assert 0.05 <= copy.delay_seconds <= 0.1


async def test_backoff_grows_with_each_attempt(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    retries: RecordingPublisher,
) -> None:
    message = await pending_task(repository)
    work.failure = SimulatedFailure("boom")
    await consumer.on_delivery(FakeDelivery(message.encode()))
    retry = FakeDelivery(message.encode(), attempts=1)
    await consumer.on_delivery(retry)

    first, second = retries.sent
    assert 0.05 <= first.delay_seconds <= 0.1
    assert 0.2 <= second.delay_seconds <= 0.4
    assert (first.attempts, second.attempts) == (1, 2)


async def test_last_attempt_marks_failed_and_dead_letters(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    retries: RecordingPublisher,
) -> None:
    message = await pending_task(repository)
    work.failure = SimulatedFailure("still broken")
    for attempt in range(3):
        delivery = FakeDelivery(message.encode(), attempts=attempt)
        await consumer.on_delivery(delivery)

    assert delivery.settled == DEAD_LETTER
    row = repository.rows[message.task_id]
    assert (row.status, row.attempts) == (TaskStatus.FAILED, 3)
    assert row.last_error == "SimulatedFailure: still broken"
    assert len(retries.published) == 2


async def test_failed_task_is_not_run_again(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, work: RecordingWork
) -> None:
    message = await pending_task(repository)
    await repository.claim(message.task_id, lease_seconds=60, steal=False)
    await repository.fail(message.task_id, "gave up")
    delivery = FakeDelivery(message.encode(), redelivered=True)

    await consumer.on_delivery(delivery)

    assert delivery.settled == ACK
    assert work.done == []
    assert repository.rows[message.task_id].status is TaskStatus.FAILED


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
async def test_invalid_message_is_dead_lettered_without_retry(
    consumer: TaskConsumer, work: RecordingWork, retries: RecordingPublisher, body: bytes
) -> None:
    delivery = FakeDelivery(body)
    await consumer.on_delivery(delivery)
    assert delivery.settled == DEAD_LETTER
    assert work.done == []
    assert retries.published == []


async def test_unknown_task_is_looked_up_again_then_dead_lettered(
    consumer: TaskConsumer, work: RecordingWork, retries: RecordingPublisher
) -> None:
    message = TaskMessage(str(uuid.uuid4()), "t", "d", None)
    first = FakeDelivery(message.encode())
    await consumer.on_delivery(first)
    assert first.settled == ACK
    [copy] = retries.sent
    assert copy.lookups == 1
    assert copy.attempts == 0  # the retry budget is not touched

    last = FakeDelivery(message.encode(), lookups=2)
    await consumer.on_delivery(last)
    assert last.settled == DEAD_LETTER
    assert work.done == []


async def test_database_error_retries_through_the_broker(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, retries: RecordingPublisher
) -> None:
    message = await pending_task(repository)
    repository.fail_with_unavailable()
    delivery = FakeDelivery(message.encode())

    await consumer.on_delivery(delivery)

    assert delivery.settled == ACK
    [copy] = retries.sent
    assert copy.attempts == 1


async def test_database_and_broker_down_requeues_the_message(
    consumer: TaskConsumer, repository: InMemoryTaskRepository, retries: RecordingPublisher
) -> None:
    message = await pending_task(repository)
    repository.fail_with_unavailable()
    retries.fail = True
    delivery = FakeDelivery(message.encode())

    await consumer.on_delivery(delivery)

    assert delivery.settled == REQUEUE


async def test_unexpected_error_requeues(
    consumer: TaskConsumer, repository: InMemoryTaskRepository
) -> None:
    message = await pending_task(repository)
    repository.failure = RuntimeError("a bug")
    delivery = FakeDelivery(message.encode())

    await consumer.on_delivery(delivery)

    assert delivery.settled == REQUEUE
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

    await consumer.on_delivery(Probe(message.encode()))

    assert seen_at_ack == [TaskStatus.COMPLETED]


def test_error_summary_is_short_and_has_no_trace() -> None:
    assert error_summary(ValueError("bad value\n  File x.py")) == "ValueError: bad value"
    assert error_summary(TimeoutError()) == "TimeoutError"
    assert len(error_summary(RuntimeError("x" * 2000))) == 500


class Unforeseen(Exception):
    """What no handler anywhere names."""


@pytest.mark.parametrize("where", ["work", "settle"])
async def test_the_consumer_outlives_any_exception_and_takes_the_next_delivery(
    consumer: TaskConsumer,
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    where: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Breaking(FakeDelivery):
        async def ack(self) -> None:
            raise Unforeseen("settling broke")

        async def requeue(self) -> None:
            raise Unforeseen("settling broke")

    message, following = await pending_task(repository), await pending_task(repository)
    if where == "work":
        repository.failure = Unforeseen("a bug")
        await consumer.on_delivery(FakeDelivery(message.encode()))
        repository.failure = None
    else:
        await consumer.on_delivery(Breaking(message.encode()))
    next_delivery = FakeDelivery(following.encode())
    await consumer.on_delivery(next_delivery)

    assert next_delivery.settled == ACK
    assert repository.rows[following.task_id].status is TaskStatus.COMPLETED
    assert consumer.in_flight == 0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert all(r.exc_info is not None for r in errors)
