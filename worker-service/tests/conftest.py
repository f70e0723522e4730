from __future__ import annotations

from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.messages import TaskMessage
from common.topology import Topology
from services.consumer import TaskConsumer
from services.retry_policy import RetryPolicy
from testkit.fakes import InMemoryTaskRepository, RecordingAmqpPublisher


class FakeDelivery:
    """Just enough of an incoming AMQP message to see how the consumer settles it."""

    def __init__(
        self, body: bytes, *, redelivered: bool = False, headers: dict[str, Any] | None = None
    ) -> None:
        self.body = body
        self.redelivered = redelivered
        self.headers = headers or {}
        self.message_id = "m-1"
        self.settled: list[tuple[str, Any]] = []

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append(("nack", requeue))

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append(("reject", requeue))

    def as_message(self) -> AbstractIncomingMessage:
        return cast(AbstractIncomingMessage, self)


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
    topology = Topology("tasks", "quorum", delivery_limit=10, retry_delays_ms=(100, 400))
    return RetryPolicy(max_attempts=3, delays_seconds=(0.1, 0.4), topology=topology)


@pytest.fixture
def retries() -> RecordingAmqpPublisher:
    return RecordingAmqpPublisher()


@pytest.fixture
def consumer(
    repository: InMemoryTaskRepository,
    work: RecordingWork,
    policy: RetryPolicy,
    retries: RecordingAmqpPublisher,
) -> TaskConsumer:
    return TaskConsumer(
        repository=repository,
        work=work,
        policy=policy,
        retry_publisher=retries,
        lease_seconds=60,
        requeue_pause_seconds=0,
        unknown_task_max_lookups=3,
    )
