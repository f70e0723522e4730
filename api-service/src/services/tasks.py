"""Use cases of the API: accept a task (once per idempotency key), read and list tasks,
cancel one, re-drive one after it FAILED.

Each takes the caller's `tenant` (the API key's name, '' while keys are off) and touches only
that tenant's tasks: another tenant's task is TaskNotFound, the same answer as an id nobody
has, after the same one read by id.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from common.errors import DependencyUnavailable, TaskNotCancellable, TaskNotFailed, TaskNotFound
from common.logs import bind
from common.messages import TaskMessage, is_task_id
from common.ports import TaskPublisher, TaskRepository
from common.task_types import DEFAULT_TYPE
from common.tasks import (
    IdempotencyKey,
    MinuteThroughput,
    NewTask,
    TaskQuery,
    TaskRecord,
    TaskStatus,
)

Broadcast = Callable[[Sequence[str]], None]

logger = logging.getLogger(__name__)


async def submit_task(
    *,
    repository: TaskRepository,
    publisher: TaskPublisher,
    title: str,
    description: str,
    metadata: dict[str, Any] | None,
    task_type: str = DEFAULT_TYPE,
    payload: dict[str, Any] | None = None,
    timeout_seconds: int | None = None,
    run_at: datetime | None = None,
    callback_url: str | None = None,
    idempotency_key: IdempotencyKey | None = None,
    tenant: str = "",
) -> tuple[TaskRecord, bool]:
    """Store the task (PENDING, not yet dispatched) and try to publish it at once, unless
    `run_at` is still ahead; with an idempotency key already stored, the task it names
    instead, and True (a replay).

    Once the insert has committed the task is accepted, whatever the broker does: a message
    that is not confirmed now is sent by the dispatcher later (the transactional outbox),
    and a scheduled task's by the dispatcher once it is due.
    """
    task = NewTask(
        task_id=str(uuid.uuid4()),
        title=title,
        description=description,
        metadata=metadata,
        type=task_type,
        payload=payload,
        timeout_seconds=timeout_seconds,
        run_at=run_at,
        callback_url=callback_url,
        tenant=tenant,
    )
    if idempotency_key is None:
        record, replayed = await repository.create(task), False
    else:
        record, replayed = await repository.create_idempotent(task, idempotency_key)
    bind(task_id=record.task_id)  # on every record logged for the rest of the request
    if replayed:
        logger.info("task submission replayed", extra={"task_id": record.task_id})
        return record, True
    # Against the row's own time, as the dispatcher judges it: a run_at after updated_at is
    # the dispatcher's alone to publish, even when it has passed by now (publishing here too
    # could send it twice).
    if run_at is not None and run_at > record.updated_at:
        logger.info("task scheduled", extra={"task_id": record.task_id, "run_at": str(run_at)})
        return record, False
    published = await dispatch(repository=repository, publisher=publisher, record=record)
    # One line for both steps (a log line is a measurable part of a request's cost).
    logger.info("task accepted", extra={"task_id": record.task_id, "published": published})
    return record, False


async def dispatch(
    *, repository: TaskRepository, publisher: TaskPublisher, record: TaskRecord
) -> bool:
    """Publish one task's message and, once confirmed, set its outbox mark; True if the
    message was confirmed. Never raises for an unavailable broker or database: the
    dispatcher covers whatever is left unmarked."""
    task_id = record.task_id
    if not publisher.is_open:
        logger.warning("task publish deferred", extra={"task_id": task_id, "reason": "broker down"})
        return False
    try:
        await publisher.publish(TaskMessage.from_record(record))
    except DependencyUnavailable as exc:
        logger.warning("task publish deferred", extra={"task_id": task_id, "reason": str(exc)})
        return False
    try:
        await repository.mark_dispatched([task_id])
    except DependencyUnavailable as exc:
        # The dispatcher may send it again; the worker's claim makes that harmless.
        logger.warning("dispatch mark not written", extra={"task_id": task_id, "error": str(exc)})
    return True


async def get_task(*, repository: TaskRepository, task_id: str, tenant: str) -> TaskRecord:
    # A malformed id cannot name a task: answer 404 without asking the database.
    record = await repository.get(task_id.lower()) if is_task_id(task_id.lower()) else None
    if record is None or record.tenant != tenant:
        raise TaskNotFound(task_id)
    bind(task_id=record.task_id)  # on every record logged for the rest of the request
    return record


async def retry_task(
    *, repository: TaskRepository, publisher: TaskPublisher, task_id: str, tenant: str
) -> TaskRecord:
    """FAILED -> PENDING with a fresh attempt budget, dispatched like a new task."""
    current = await get_task(repository=repository, task_id=task_id, tenant=tenant)
    record = await repository.reset_failed(current.task_id)
    if record is None:
        raise TaskNotFailed(current.task_id, current.status)
    published = await dispatch(repository=repository, publisher=publisher, record=record)
    logger.info("task re-driven", extra={"task_id": record.task_id, "published": published})
    return record


async def cancel_task(
    *, repository: TaskRepository, broadcast_cancel: Broadcast, task_id: str, tenant: str
) -> TaskRecord:
    """PENDING or PROCESSING -> CANCELLED at once. A PROCESSING task's work is stopped by the
    worker that holds it, told through the broker; whatever that worker does next, the row
    stays CANCELLED (completing is conditional on PROCESSING)."""
    current = await get_task(repository=repository, task_id=task_id, tenant=tenant)
    cancellation = await repository.cancel(current.task_id)
    if cancellation is None:
        raise TaskNotFound(task_id)
    if not cancellation.cancelled:
        raise TaskNotCancellable(current.task_id, cancellation.record.status)
    if cancellation.previous is TaskStatus.PROCESSING:
        broadcast_cancel([current.task_id])
    logger.info(
        "task cancelled", extra={"task_id": current.task_id, "was": cancellation.previous.value}
    )
    return cancellation.record


async def list_tasks(
    *, repository: TaskRepository, query: TaskQuery
) -> tuple[list[TaskRecord], bool]:
    return await repository.list_tasks(query)


async def task_counts(*, repository: TaskRepository, tenant: str) -> dict[TaskStatus, int]:
    return await repository.count_by_status(tenant)


async def task_throughput(
    *, repository: TaskRepository, tenant: str, minutes: int
) -> list[MinuteThroughput]:
    """The tenant's submitted and completed tasks in each of the last `minutes` minutes."""
    return await repository.throughput(tenant, minutes=minutes)
