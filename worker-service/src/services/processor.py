"""The worker's use case: take one task from PENDING to COMPLETED, at most once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from common.messages import TaskMessage
from common.ports import TaskRepository
from common.settings import Settings
from common.task_types import CATALOGUE, TaskType
from common.tasks import ClaimResult
from handlers.context import Handler, PermanentTaskError, RunInProcess, TaskContext
from models.outcomes import Outcome, ProcessResult
from services.progress import ProgressWriter
from services.running import RunningWork

logger = logging.getLogger(__name__)

_SKIPPED = {
    ClaimResult.NOT_FOUND: Outcome.UNKNOWN_TASK,
    ClaimResult.ALREADY_FINAL: Outcome.ALREADY_FINAL,
    ClaimResult.HELD_ELSEWHERE: Outcome.DUPLICATE,
}


async def _no_pool(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("this worker has no process pool for CPU-bound work")


@dataclass(frozen=True, slots=True)
class Handlers:
    """What this worker can run: each task type's handler, and what their contexts need."""

    by_type: Mapping[str, Handler]
    settings: Settings
    run_in_process: RunInProcess = _no_pool
    progress_interval_seconds: float = 1.0

    def find(self, type_name: str) -> tuple[TaskType, Handler] | None:
        task_type, handler = CATALOGUE.get(type_name), self.by_type.get(type_name)
        return None if task_type is None or handler is None else (task_type, handler)


class ResultRefused(Exception):
    """The handler's return value cannot be stored: not JSON, or over RESULT_MAX_BYTES."""


def error_summary(exc: BaseException) -> str:
    """Short and safe to show to a client: the exception's type and first line, no trace."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:500] if first_line else type(exc).__name__


def encoded_result(result: Any, max_bytes: int) -> str | None:
    """The result as the JSON text stored with COMPLETED (None for None)."""
    if result is None:
        return None
    try:
        encoded = orjson.dumps(result)
    except orjson.JSONEncodeError as exc:
        raise ResultRefused(f"the result is not JSON: {exc}") from None
    if len(encoded) > max_bytes:
        raise ResultRefused(
            f"the result is {len(encoded):,} bytes of JSON, over RESULT_MAX_BYTES ({max_bytes:,})"
        )
    return encoded.decode()


async def process_task(
    *,
    repository: TaskRepository,
    message: TaskMessage,
    handlers: Handlers,
    max_attempts: int,
    lease_seconds: float,
    take_over: bool,
    running: RunningWork,
) -> ProcessResult:
    """Claim the task, run its type's handler, then mark it COMPLETED with the handler's
    result in one conditional update.

    A type this worker has no handler for is not claimed (the NO_HANDLER outcome: another
    worker may have it). `take_over` lets this delivery claim a task left PROCESSING under a
    live lease: set for a redelivery (the worker that held it lost its connection or died)
    and for a retry message (the worker that held it gave up its attempt). The claim holds
    for the attempt's timeout plus `lease_seconds`. The work runs tracked in `running`, so
    that a cancel of the task stops it (the CANCELLED outcome), and within the timeout.
    A failed attempt is recorded on the row: PENDING again with last_error, or FAILED once
    the type's attempts are used up or the handler raised PermanentTaskError. Database errors
    propagate: they are not the task's fault.
    """
    task_id = message.task_id
    found = handlers.find(message.type)
    if found is None:
        logger.info("task has no handler here", extra={"task_id": task_id, "type": message.type})
        return ProcessResult(Outcome.NO_HANDLER)
    task_type, handler = found
    timeout = task_type.timeout_for(message.timeout_seconds)
    claim = await repository.claim(task_id, lease_seconds=timeout + lease_seconds, steal=take_over)
    if claim.result is not ClaimResult.CLAIMED:
        logger.info(
            "task skipped",
            extra={"task_id": task_id, "reason": claim.result.value, "take_over": take_over},
        )
        return ProcessResult(_SKIPPED[claim.result])
    attempt = claim.attempts
    logger.info("task claimed", extra={"task_id": task_id, "attempt": attempt})
    allowed = task_type.attempts_allowed(max_attempts)
    progress = ProgressWriter(
        repository, task_id, attempt, interval=handlers.progress_interval_seconds
    )
    try:
        try:
            payload = task_type.payload.model_validate(message.payload or {})
            with running.tracking(task_id) as cancelled:
                deadline = asyncio.get_running_loop().time() + timeout
                context = TaskContext(
                    task_id=task_id,
                    payload=payload,
                    attempt=attempt,
                    deadline=deadline,
                    cancelled=cancelled,
                    settings=handlers.settings,
                    _progress=progress.report,
                    _run_in_process=handlers.run_in_process,
                )
                result = await _within(handler(context), deadline, timeout)
            encoded = encoded_result(result, handlers.settings.result_max_bytes)
        finally:
            await progress.close()
    except asyncio.CancelledError:
        if not running.was_stopped(task_id):
            raise  # the worker itself is stopping
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        # The row says CANCELLED already: whoever cancelled it wrote that.
        logger.info("task cancelled", extra={"task_id": task_id, "attempt": attempt})
        return ProcessResult(Outcome.CANCELLED, attempt)
    except (PermanentTaskError, ValidationError) as exc:
        return await _record_failure(repository, task_id, exc, attempt, last=True)
    except Exception as exc:
        return await _record_failure(repository, task_id, exc, attempt, last=attempt >= allowed)
    if not await repository.complete(task_id, encoded):
        # Another holder finished first; the row already says COMPLETED, once.
        logger.info("task completed elsewhere", extra={"task_id": task_id})
        return ProcessResult(Outcome.ALREADY_FINAL)
    logger.info("task completed", extra={"task_id": task_id, "attempt": attempt})
    return ProcessResult(Outcome.COMPLETED, attempt)


async def _within(work: Any, deadline: float, seconds: int) -> Any:
    """Await the handler until the deadline; past it, its work is cancelled and the attempt
    fails with a TimeoutError that says so (a TimeoutError of the handler's own is its own)."""
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            return await work
    except TimeoutError:
        if not scope.expired():
            raise
        raise TimeoutError(f"the attempt timed out after {seconds} s") from None


async def give_up_on_type(
    *,
    repository: TaskRepository,
    message: TaskMessage,
    lease_seconds: float,
    take_over: bool,
    tried: int,
) -> ProcessResult:
    """FAILED with a last_error that says why: `tried` workers in a row had no handler for
    the task's type (claimed first, since only a claimed task may fail)."""
    task_id = message.task_id
    claim = await repository.claim(task_id, lease_seconds=lease_seconds, steal=take_over)
    if claim.result is not ClaimResult.CLAIMED:
        return ProcessResult(_SKIPPED[claim.result])
    error = (
        f"NoHandler: no worker that received the task has a handler for its type"
        f" {message.type!r} ({tried} tries, UNKNOWN_TYPE_MAX_ATTEMPTS)"
    )
    if not await repository.fail(task_id, error[:500]):
        return ProcessResult(Outcome.ALREADY_FINAL)
    logger.warning("task failed", extra={"task_id": task_id, "error": error})
    return ProcessResult(Outcome.FAILED, claim.attempts)


async def _record_failure(
    repository: TaskRepository, task_id: str, exc: Exception, attempts: int, *, last: bool
) -> ProcessResult:
    error = error_summary(exc)
    context = {"task_id": task_id, "attempt": attempts, "error": error}
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
