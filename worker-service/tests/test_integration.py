"""The worker's consume loop against the real MySQL/MariaDB and RabbitMQ (scratch db + vhost)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from common.messages import TaskMessage
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask, TaskRecord, TaskStatus
from main import run_worker
from testkit import fixtures
from testkit.broker import publish_raw, publish_task, ready_messages
from testkit.polling import wait_until

pytestmark = pytest.mark.integration

# The real repository on the scratch database, not conftest.py's in-memory fake.
repository = fixtures.repository


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"processing_delay_min_seconds": 0.01, "processing_delay_max_seconds": 0.05}


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    """The worker's real consume loop; on exit it is stopped, which waits for every delivery
    it holds to be settled."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def new_task(repository: MySQLTaskRepository) -> TaskRecord:
    return await repository.create(NewTask(str(uuid.uuid4()), "title ✓", "description", None))


async def completed(repository: MySQLTaskRepository, task_id: str) -> TaskRecord | None:
    record = await repository.get(task_id)
    return record if record and record.status is TaskStatus.COMPLETED else None


async def queue_drained(channel: AbstractChannel, settings: Settings) -> bool:
    """No message is waiting (those being worked on are not counted)."""
    return await ready_messages(channel, settings.task_queue) == 0


async def test_published_tasks_reach_completed(
    repository: MySQLTaskRepository, channel: AbstractChannel, settings: Settings
) -> None:
    records = [await new_task(repository) for _ in range(20)]
    async with running_worker(settings) as worker:
        for record in records:
            await publish_task(channel, settings, TaskMessage.from_record(record))
        for record in records:
            done = await wait_until(
                functools.partial(completed, repository, record.task_id), timeout=20
            )
            assert done.completed_at is not None
            assert done.completed_at >= done.created_at
            assert done.attempts == 1
        assert not worker.done()


async def test_duplicate_messages_complete_the_task_once(
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
    settings: Settings,
) -> None:
    record = await new_task(repository)
    async with running_worker(settings):
        await publish_task(channel, settings, TaskMessage.from_record(record))
        first = await wait_until(lambda: completed(repository, record.task_id), timeout=20)
        for _ in range(3):
            await publish_task(channel, settings, TaskMessage.from_record(record))
        await wait_until(lambda: queue_drained(channel, settings), timeout=20, what="drained")
    # The worker has settled every delivery by now. None of the duplicates redid anything.
    again = await repository.get(record.task_id)
    assert again is not None
    assert (again.status, again.completed_at, again.attempts) == (
        TaskStatus.COMPLETED,
        first.completed_at,
        1,
    )
    assert await queue_drained(channel, settings)


async def test_invalid_messages_are_dropped_and_the_worker_keeps_going(
    repository: MySQLTaskRepository,
    settings: Settings,
    channel: AbstractChannel,
) -> None:
    for body in (b"not json", b'{"task_id": "nope"}', b"{}"):
        await publish_raw(channel, settings, body)
    record = await new_task(repository)
    await publish_task(channel, settings, TaskMessage.from_record(record))
    async with running_worker(settings) as worker:
        await wait_until(lambda: completed(repository, record.task_id), timeout=20)
        await wait_until(lambda: queue_drained(channel, settings), timeout=20, what="drained")
        assert not worker.done()
    # Rejected without requeue: after the worker stopped, nothing came back to the queue.
    assert await queue_drained(channel, settings)
