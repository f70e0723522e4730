"""Moving dead-lettered task messages back to the work queue (`make redrive`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from common.broker import task_amqp_message
from common.errors import InvalidTaskMessage
from common.messages import decode_task_message
from common.tasks import TaskRepository, TaskStatus
from common.topology import Topology

logger = logging.getLogger(__name__)


@dataclass
class RedriveReport:
    moved: int = 0  # back on the work queue; a FAILED task was reset to PENDING first
    dropped: int = 0  # the task is COMPLETED already: nothing left to do
    kept: int = 0  # poison (not a task message, or no such task): stays for inspection


async def redrive_dead_letters(
    *, channel: AbstractChannel, repository: TaskRepository, topology: Topology, limit: int
) -> RedriveReport:
    """Take up to `limit` messages from the dead-letter queue. Messages kept are held
    unacked until the end, so each is seen once; closing the channel puts them back."""
    report = RedriveReport()
    dlq = await channel.get_queue(topology.dead_letter_queue, ensure=False)
    for _ in range(limit):
        message = await dlq.get(fail=False, no_ack=False)
        if message is None:
            break
        await _redrive_one(message, channel, repository, topology, report)
    return report


async def _redrive_one(
    message: AbstractIncomingMessage,
    channel: AbstractChannel,
    repository: TaskRepository,
    topology: Topology,
    report: RedriveReport,
) -> None:
    try:
        task = decode_task_message(message.body)
    except InvalidTaskMessage:
        report.kept += 1
        return
    record = await repository.get(task.task_id)
    if record is None:
        report.kept += 1
        return
    if record.status is TaskStatus.COMPLETED:
        await message.ack()
        report.dropped += 1
        return
    if record.status is TaskStatus.FAILED:
        await repository.reset_failed(task.task_id)
    await channel.default_exchange.publish(
        task_amqp_message(task), routing_key=topology.work_queue, mandatory=True
    )
    await message.ack()
    report.moved += 1
    logger.info("task re-driven", extra={"task_id": task.task_id, "was": record.status.value})
