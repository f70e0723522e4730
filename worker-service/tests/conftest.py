from __future__ import annotations

import pytest

from common.messages import TaskMessage
from services.consumer import TaskConsumer
from services.retry_policy import RetryPolicy
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher


class FakeDelivery:
    """The Delivery port, recording how the consumer settles it."""

    def __init__(
        self, body: bytes, *, redelivered: bool = False, attempts: int = 0, lookups: int = 0
    ) -> None:
        self.body = body
        self.redelivered = redelivered
        self.attempts = attempts
        self.lookups = lookups
        self.message_id: str | None = "m-1"
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def requeue(self) -> None:
        self.settled.append("requeue")

    async def dead_letter(self) -> None:
        self.settled.append("dead_letter")


class RecordingWork:
    def __init__(self) -> None:
        self.done: list[str] = []
        self.failure: Exception | None = None

    async def __call__(self, message: TaskMessage) -> None:
        if self.failure is not None:
            raise self.failure
        self.done.append(message.task_id)


@pytest.fixture
def repository() -> InMemoryTaskRepository:
    return InMemoryTaskRepository()


@pytest.fixture
def work() -> RecordingWork:
    return RecordingWork()


@pytest.fixture
def policy() -> RetryPolicy:
    return RetryPolicy(max_attempts=3, delays_seconds=(0.1, 0.4))


@pytest.fixture
def retries() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def consumer(
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    policy: RetryPolicy,
    retries: RecordingPublisher,
) -> TaskConsumer:
    return TaskConsumer(
        repository=repository,
        work=work,
        policy=policy,
        publisher=retries,
        lease_seconds=60,
        requeue_pause_seconds=0,
        unknown_task_max_lookups=3,
    )
