from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from common.messages import TaskMessage
from common.settings import load_settings
from handlers.context import TaskContext
from services.consumer import TaskConsumer
from services.processor import Handlers
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


def same_but_due(copy: TaskMessage, message: TaskMessage) -> TaskMessage:
    """`copy` checked to be due no sooner than now (a delayed copy is due once its delay is
    over), then given `message`'s due time, to compare the rest with `message`."""
    assert copy.due_at is not None
    assert copy.due_at >= time.time() - 1
    return dataclasses.replace(copy, due_at=message.due_at)


class RecordingWork:
    """A handler for `simulated` tasks that records what it did, and fails or returns what
    it is told to."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.failure: Exception | None = None
        self.result: Any = None

    async def __call__(self, ctx: TaskContext[Any]) -> Any:
        if self.failure is not None:
            raise self.failure
        self.done.append(ctx.task_id)
        return self.result


def handlers_of(work: RecordingWork, **settings: Any) -> Handlers:
    return Handlers({"simulated": work}, load_settings(**settings))


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
        handlers=handlers_of(work),
        policy=policy,
        publisher=retries,
        lease_seconds=60,
        requeue_pause_seconds=0,
        unknown_task_max_lookups=3,
    )
