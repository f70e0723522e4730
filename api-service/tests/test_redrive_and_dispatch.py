"""Re-driving a FAILED task, and the outbox dispatcher, against the fakes."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import timedelta

import httpx
import pytest
from test_submit import assert_problem

from common.tasks import NewTask, TaskStatus
from services.dispatcher import dispatch_pending, run_dispatcher
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.polling import wait_until

pytestmark = pytest.mark.unit


async def failed_task(repository: InMemoryTaskRepository) -> str:
    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "t", "d", None))
    await repository.claim(task_id, lease_seconds=60, steal=False)
    await repository.fail(task_id, "ValueError: boom")
    return task_id


async def test_retry_puts_a_failed_task_back_and_dispatches_it(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    task_id = await failed_task(repository)

    response = await client.post(f"/api/tasks/{task_id}/retry")

    assert response.status_code == 202
    assert response.json()["status"] == "PENDING"
    assert response.headers["location"] == f"/api/tasks/{task_id}"
    row = repository.rows[task_id]
    assert (row.status, row.attempts, row.last_error) == (TaskStatus.PENDING, 0, None)
    assert [m.task_id for m in publisher.published] == [task_id]


@pytest.mark.parametrize("steps", [0, 1, 2], ids=["pending", "processing", "completed"])
async def test_retry_of_a_task_that_is_not_failed_is_409(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, steps: int
) -> None:
    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "t", "d", None))
    if steps >= 1:
        await repository.claim(task_id, lease_seconds=60, steal=False)
    if steps >= 2:
        await repository.complete(task_id)

    problem = assert_problem(await client.post(f"/api/tasks/{task_id}/retry"), 409)
    assert problem["task_status"] == ["PENDING", "PROCESSING", "COMPLETED"][steps]


async def test_retry_of_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post(f"/api/tasks/{uuid.uuid4()}/retry"), 404)
    assert_problem(await client.post("/api/tasks/not-an-id/retry"), 404)


async def backdated_task(repository: InMemoryTaskRepository, seconds: float) -> str:
    """A PENDING task, never dispatched, last updated `seconds` ago."""
    task_id = str(uuid.uuid4())
    record = await repository.create(NewTask(task_id, "t", "d", None))
    repository.rows[task_id] = dataclasses.replace(
        record, updated_at=record.updated_at - timedelta(seconds=seconds)
    )
    return task_id


async def test_dispatcher_publishes_what_was_never_confirmed(
    repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    old = await backdated_task(repository, 10)
    fresh = await backdated_task(repository, 0)  # may still be in its request's hands

    sent = await dispatch_pending(
        repository=repository, publisher=publisher, limit=100, min_age_seconds=2
    )

    assert sent == 1
    assert [m.task_id for m in publisher.published] == [old]
    assert old in repository.dispatched
    assert fresh not in repository.dispatched
    # A second pass has nothing left to send.
    assert (
        await dispatch_pending(
            repository=repository, publisher=publisher, limit=100, min_age_seconds=2
        )
        == 0
    )


async def test_dispatcher_leaves_everything_marked_undispatched_while_the_broker_fails(
    repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    ids = [await backdated_task(repository, 10) for _ in range(3)]
    publisher.fail = True

    sent = await dispatch_pending(
        repository=repository, publisher=publisher, limit=100, min_age_seconds=2
    )

    assert sent == 0
    assert repository.dispatched.isdisjoint(ids)


class Unforeseen(Exception):
    """What no handler anywhere names."""


async def test_the_dispatcher_outlives_any_failure_of_a_pass_and_stops_on_cancel(
    repository: InMemoryTaskRepository,
    publisher: RecordingPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    task_id = await backdated_task(repository, 10)
    repository.failure = Unforeseen("a bug in a pass")
    loop = asyncio.create_task(
        run_dispatcher(
            repository=repository,
            publisher=publisher,
            interval_seconds=0.01,
            min_age_seconds=2,
            batch_size=10,
        )
    )

    async def failed_unexpectedly() -> bool:
        return any(r.getMessage() == "loop pass failed unexpectedly" for r in caplog.records)

    async def published() -> bool:
        return task_id in [m.task_id for m in publisher.published]

    await wait_until(failed_unexpectedly, timeout=5, what="the failed pass")
    repository.failure = None
    await wait_until(published, timeout=5, what="a later pass to publish")
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
