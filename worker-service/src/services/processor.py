"""The worker's use case: take one task from PENDING to COMPLETED, at most once."""

from __future__ import annotations

import asyncio
import logging

from common.messages import TaskMessage
from common.ports import TaskRepository
from common.tasks import ClaimResult
from models.outcomes import Outcome, ProcessResult
from services.running import RunningWork
from services.work import Work

logger = logging.getLogger(__name__)

_SKIPPED = {
    ClaimResult.NOT_FOUND: Outcome.UNKNOWN_TASK,
    ClaimResult.ALREADY_FINAL: Outcome.ALREADY_FINAL,
    ClaimResult.HELD_ELSEWHERE: Outcome.DUPLICATE,
}


def error_summary(exc: BaseException) -> str:
    """Short and safe to show to a client: the exception's type and first line, no trace."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:500] if first_line else type(exc).__name__


async def process_task(
    *,
    repository: TaskRepository,
    message: TaskMessage,
    work: Work,
    max_attempts: int,
    lease_seconds: float,
    take_over: bool,
    running: RunningWork,
) -> ProcessResult:
    """Claim the task, do the work, then mark it COMPLETED in one conditional update.

    `take_over` lets this delivery claim a task left PROCESSING under a live lease: set for a
    redelivery (the worker that held it lost its connection or died) and for a retry message
    (the worker that held it gave up its attempt). The work runs tracked in `running`, so
    that a cancel of the task stops it (the CANCELLED outcome).
    A failed attempt is recorded on the row: PENDING again with last_error, or FAILED once
    `max_attempts` have been made. Database errors propagate: they are not the task's fault.
    """
    task_id = message.task_id
    claim = await repository.claim(task_id, lease_seconds=lease_seconds, steal=take_over)
    if claim.result is not ClaimResult.CLAIMED:
        logger.info(
            "task skipped",
            extra={"task_id": task_id, "reason": claim.result.value, "take_over": take_over},
        )
        return ProcessResult(_SKIPPED[claim.result])
    logger.info("task claimed", extra={"task_id": task_id, "attempt": claim.attempts})
    try:
        with running.tracking(task_id):
            await work(message)
    except asyncio.CancelledError:
        if not running.was_stopped(task_id):
            raise  # the worker itself is stopping
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        # The row says CANCELLED already: whoever cancelled it wrote that.
        logger.info("task cancelled", extra={"task_id": task_id, "attempt": claim.attempts})
        return ProcessResult(Outcome.CANCELLED, claim.attempts)
    except Exception as exc:
        return await _record_failure(repository, task_id, exc, claim.attempts, max_attempts)
    if not await repository.complete(task_id):
        # Another holder finished first; the row already says COMPLETED, once.
        logger.info("task completed elsewhere", extra={"task_id": task_id})
        return ProcessResult(Outcome.ALREADY_FINAL)
    logger.info("task completed", extra={"task_id": task_id, "attempt": claim.attempts})
    return ProcessResult(Outcome.COMPLETED, claim.attempts)


async def _record_failure(
    repository: TaskRepository, task_id: str, exc: Exception, attempts: int, max_attempts: int
) -> ProcessResult:
    error = error_summary(exc)
    context = {"task_id": task_id, "attempt": attempts, "error": error}
    last = attempts >= max_attempts
    recorded = await (repository.fail if last else repository.release_for_retry)(task_id, error)
    if not recorded:
        # No longer PROCESSING under this claim (cancelled, or taken over): nothing to do.
        logger.info("task moved on", extra=context)
        return ProcessResult(Outcome.ALREADY_FINAL)
    if last:
        logger.warning("task failed", extra=context)
        return ProcessResult(Outcome.FAILED, attempts)
    logger.info("task attempt failed", extra=context)
    return ProcessResult(Outcome.RETRY, attempts)
