"""The outbox dispatcher: publishes the tasks whose message was never confirmed, and the
scheduled tasks once they are due."""

from __future__ import annotations

import logging
from typing import NoReturn

from common.errors import DependencyUnavailable
from common.messages import TaskMessage
from common.ports import TaskPublisher, TaskRepository
from common.supervision import run_forever
from common.tasks import TaskRecord

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
) -> NoReturn:
    """Forever: a pass, then a pause unless the pass filled a whole batch: the interval, or
    less when a scheduled task falls due sooner (so it starts on time). A failed pass (the
    database is down, or anything else) is logged and the loop goes on, backing off."""

    async def one_pass() -> float:
        sent = await dispatch_pending(
            repository=repository,
            publisher=publisher,
            limit=batch_size,
            min_age_seconds=min_age_seconds,
        )
        if sent:
            logger.info("dispatcher published undispatched tasks", extra={"count": sent})
        if sent >= batch_size:
            return 0.0
        due_in = await repository.next_due_in()
        return interval_seconds if due_in is None else min(interval_seconds, due_in)

    await run_forever(
        one_pass, name="outbox dispatcher", max_backoff_seconds=max(interval_seconds, 5.0)
    )
