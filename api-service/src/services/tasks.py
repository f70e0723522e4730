"""Use cases of the API: accept a task, read a task."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from common.errors import BrokerUnavailable, TaskNotFound
from common.messages import TaskMessage, is_task_id
from common.tasks import NewTask, TaskRecord, TaskRepository
from services.ports import TaskPublisher

logger = logging.getLogger(__name__)


async def submit_task(
    *,
    repository: TaskRepository,
    publisher: TaskPublisher,
    title: str,
    description: str,
    metadata: dict[str, Any] | None,
) -> TaskRecord:
    """Store the task as PENDING, then publish it; return only once the broker confirmed.

    If the publish fails the row is removed again (unless a worker already took it), so a
    client that is told to retry does not leave a PENDING task behind that nobody will run.
    """
    task = NewTask(
        task_id=str(uuid.uuid4()), title=title, description=description, metadata=metadata
    )
    record = await repository.create(task)
    logger.info("task accepted", extra={"task_id": record.task_id})
    try:
        await publisher.publish(TaskMessage.from_record(record))
    except BrokerUnavailable:
        removed = await repository.delete_pending(record.task_id)
        logger.warning("task not published", extra={"task_id": record.task_id, "removed": removed})
        raise
    logger.info("task published", extra={"task_id": record.task_id})
    return record


async def get_task(*, repository: TaskRepository, task_id: str) -> TaskRecord:
    # A malformed id cannot name a task: answer 404 without asking the database.
    record = await repository.get(task_id.lower()) if is_task_id(task_id.lower()) else None
    if record is None:
        raise TaskNotFound(task_id)
    return record
