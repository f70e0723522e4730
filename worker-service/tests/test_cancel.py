"""A cancel stops the work that runs here, and only a cancel does: the worker's own shutdown
still cancels its tasks the usual way."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from common.messages import TaskMessage
from common.settings import load_settings
from common.tasks import NewTask, TaskStatus
from handlers.context import TaskContext
from models.outcomes import Outcome, ProcessResult
from services.processor import Handlers, process_task
from services.running import RunningWork
from testkit.fakes import InMemoryTaskRepository
from testkit.polling import wait_until

pytestmark = pytest.mark.unit


class BlockingWork:
    """Work that runs until cancelled; `started` is set once it runs, and `signalled` says
    whether its context's cancel signal was set by the time its CancelledError came."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.signalled: bool | None = None

    async def __call__(self, ctx: TaskContext[Any]) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.signalled = ctx.cancelled.is_set()
            raise


async def start(
    repository: InMemoryTaskRepository, running: RunningWork
) -> tuple[str, asyncio.Task[ProcessResult], BlockingWork]:
    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "t", "d", None))
    work = BlockingWork()
    processing: asyncio.Task[ProcessResult] = asyncio.create_task(
        process_task(
            repository=repository,
            message=TaskMessage(task_id, "t", "d", None),
            handlers=Handlers({"simulated": work}, load_settings()),
            max_attempts=3,
            lease_seconds=60,
            take_over=False,
            running=running,
        )
    )
    await asyncio.wait_for(work.started.wait(), timeout=5)
    return task_id, processing, work


async def test_a_cancel_stops_the_running_work() -> None:
    repository, running = InMemoryTaskRepository(), RunningWork()
    task_id, processing, work = await start(repository, running)
    await repository.cancel(task_id)

    running.cancel([task_id, str(uuid.uuid4())])  # another worker's task is ignored

    result = await asyncio.wait_for(processing, timeout=5)
    assert result.outcome is Outcome.CANCELLED
    record = await repository.get(task_id)
    assert record is not None
    assert record.status is TaskStatus.CANCELLED
    assert running.task_ids == []
    assert work.signalled is True  # a handler can tell a cancel from the worker stopping


async def test_after_a_cancel_the_task_can_still_time_out_and_be_cancelled() -> None:
    """The stopped delivery's asyncio task is uncancelled: its next awaits work normally."""
    repository, running = InMemoryTaskRepository(), RunningWork()

    async def deliver() -> tuple[ProcessResult, bool]:
        task_id, processing, _ = await start(repository, running)
        running.cancel([task_id])
        result = await processing
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            return result, True
        return result, False

    _, timed_out = await asyncio.wait_for(deliver(), timeout=5)
    assert timed_out


async def test_the_workers_own_shutdown_is_not_taken_for_a_cancel() -> None:
    repository, running = InMemoryTaskRepository(), RunningWork()
    task_id, processing, work = await start(repository, running)
    processing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await processing
    assert work.signalled is False
    record = await repository.get(task_id)
    assert record is not None
    assert record.status is TaskStatus.PROCESSING  # left for the redelivery to take over


async def test_a_missed_cancel_is_caught_up_from_the_rows() -> None:
    repository, running = InMemoryTaskRepository(), RunningWork()
    cancelled_id, cancelled, _ = await start(repository, running)
    other_id, other, _ = await start(repository, running)
    await repository.cancel(cancelled_id)  # its broadcast never arrived

    running.catch_up(repository)

    result = await asyncio.wait_for(cancelled, timeout=5)
    assert result.outcome is Outcome.CANCELLED
    await wait_until(lambda: _true(running.task_ids == [other_id]), timeout=5)
    assert not other.done()
    other.cancel()


async def _true(value: bool) -> bool:
    return value
