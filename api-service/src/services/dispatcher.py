"""The outbox dispatcher: publishes the tasks whose message was never confirmed."""

from __future__ import annotations

import asyncio
import logging

from common.errors import DependencyUnavailable
from common.messages import TaskMessage
from common.tasks import TaskRecord, TaskRepository
from services.ports import TaskPublisher

logger = logging.getLogger(__name__)


async def dispatch_pending(
    *, repository: TaskRepository, publisher: TaskPublisher, limit: int, min_age_seconds: float
) -> int:
    """One pass: returns how many tasks were published and marked."""

    broker_failed = False

    async def publish(record: TaskRecord) -> bool:
        nonlocal broker_failed
        if broker_failed:  # once one failed, those not yet sent wait for the next pass
            return False
        try:
            await publisher.publish(TaskMessage.from_record(record))
        except DependencyUnavailable:
            broker_failed = True
            return False
        logger.info("task published", extra={"task_id": record.task_id, "by": "dispatcher"})
        return True

    if not publisher.is_open:
        return 0
    return await repository.dispatch_undispatched(
        publish=publish, limit=limit, min_age_seconds=min_age_seconds
    )


async def run_dispatcher(
    *,
    repository: TaskRepository,
    publisher: TaskPublisher,
    interval_seconds: float,
    min_age_seconds: float,
    batch_size: int,
) -> None:
    """Forever: a pass, then a pause unless the pass filled a whole batch."""
    while True:
        try:
            sent = await dispatch_pending(
                repository=repository,
                publisher=publisher,
                limit=batch_size,
                min_age_seconds=min_age_seconds,
            )
        except DependencyUnavailable as exc:
            logger.warning("dispatcher pass failed", extra={"error": str(exc)})
            sent = 0
        if sent:
            logger.info("dispatcher published undispatched tasks", extra={"count": sent})
        if sent < batch_size:
            await asyncio.sleep(interval_seconds)
