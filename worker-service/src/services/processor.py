"""The worker's use case: take one task from PENDING to COMPLETED, at most once."""

from __future__ import annotations

import logging

from common.messages import TaskMessage
from common.tasks import ClaimResult, TaskRepository
from models.outcomes import Outcome
from services.work import Work

logger = logging.getLogger(__name__)

_SKIPPED = {
    ClaimResult.NOT_FOUND: Outcome.UNKNOWN_TASK,
    ClaimResult.ALREADY_FINAL: Outcome.ALREADY_FINAL,
    ClaimResult.HELD_ELSEWHERE: Outcome.DUPLICATE,
}


async def process_task(
    *,
    repository: TaskRepository,
    message: TaskMessage,
    work: Work,
    lease_seconds: float,
    redelivered: bool,
) -> Outcome:
    """Claim the task, do the work, then mark it COMPLETED in one conditional update.

    A redelivered message takes over a task left PROCESSING: the worker that held it lost
    its connection or died, and its own copy of the message is this one.
    """
    task_id = message.task_id
    claim = await repository.claim(task_id, lease_seconds=lease_seconds, steal=redelivered)
    if claim is not ClaimResult.CLAIMED:
        logger.info("task skipped", extra={"task_id": task_id, "reason": claim.value})
        return _SKIPPED[claim]
    logger.info("task claimed", extra={"task_id": task_id, "redelivered": redelivered})
    await work(message)
    if not await repository.complete(task_id):
        # Another holder finished first; the row already says COMPLETED once.
        logger.info("task completed elsewhere", extra={"task_id": task_id})
        return Outcome.ALREADY_FINAL
    logger.info("task completed", extra={"task_id": task_id})
    return Outcome.COMPLETED
