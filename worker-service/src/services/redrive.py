"""Moving dead-lettered task messages back to the work queue (`make redrive`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.errors import InvalidTaskMessage
from common.messages import decode_task_message
from common.ports import DeadLetters, Delivery, TaskPublisher, TaskRepository
from common.tasks import TaskStatus

logger = logging.getLogger(__name__)


@dataclass
class RedriveReport:
    moved: int = 0  # back on the work queue; a FAILED task was reset to PENDING first
    dropped: int = 0  # the task is COMPLETED already: nothing left to do
    kept: int = 0  # poison (not a task message, or no such task): stays for inspection


async def redrive_dead_letters(
    *, letters: DeadLetters, publisher: TaskPublisher, repository: TaskRepository, limit: int
) -> RedriveReport:
    """Take up to `limit` messages from the dead-letter queue. Messages kept are held
    unsettled until the end, so each is seen once; closing the reader puts them back."""
    report = RedriveReport()
    for _ in range(limit):
        letter = await letters.take()
        if letter is None:
            break
        await _redrive_one(letter, publisher, repository, report)
    return report


async def _redrive_one(
    letter: Delivery, publisher: TaskPublisher, repository: TaskRepository, report: RedriveReport
) -> None:
    try:
        task = decode_task_message(letter.body)
    except InvalidTaskMessage:
        report.kept += 1
        return
    record = await repository.get(task.task_id)
    if record is None:
        report.kept += 1
        return
    if record.status is TaskStatus.COMPLETED:
        await letter.ack()
        report.dropped += 1
        return
    if record.status is TaskStatus.FAILED:
        await repository.reset_failed(task.task_id)
    await publisher.publish(task)
    await letter.ack()
    report.moved += 1
    logger.info("task re-driven", extra={"task_id": task.task_id, "was": record.status.value})
