"""Turns deliveries into `process_task` calls and outcomes into ack, requeue or reject."""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from common.errors import DatabaseUnavailable, InvalidTaskMessage
from common.messages import decode_task_message
from common.tasks import TaskRepository
from models.outcomes import Outcome
from services.processor import process_task
from services.work import Work

logger = logging.getLogger(__name__)


class Settlement(enum.Enum):
    ACK = "ack"
    REQUEUE = "requeue"
    REJECT = "reject"


@dataclass
class TaskConsumer:
    repository: TaskRepository
    work: Work
    lease_seconds: float
    requeue_pause_seconds: float
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no delivery is being processed."""
        await self._idle.wait()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Settle each delivery only after its outcome is committed; never raise."""
        self.in_flight += 1
        self._idle.clear()
        try:
            await self._handle(message)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        settlement = await self._decide(message)
        if settlement is Settlement.REQUEUE:
            # A short pause, so that a database outage is not a hot redelivery loop.
            await asyncio.sleep(self.requeue_pause_seconds)
        try:
            if settlement is Settlement.ACK:
                await message.ack()
            elif settlement is Settlement.REQUEUE:
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            # The channel is gone; the broker redelivers the message and the claim is idempotent.
            logger.warning("could not settle message", extra={"error": repr(exc)})

    async def _decide(self, message: AbstractIncomingMessage) -> Settlement:
        try:
            task = decode_task_message(message.body)
        except InvalidTaskMessage as exc:
            logger.warning(
                "message rejected", extra={"reason": str(exc), "message_id": message.message_id}
            )
            return Settlement.REJECT
        try:
            outcome = await process_task(
                repository=self.repository,
                message=task,
                work=self.work,
                lease_seconds=self.lease_seconds,
                redelivered=bool(message.redelivered),
            )
        except DatabaseUnavailable as exc:
            logger.warning(
                "database unavailable", extra={"task_id": task.task_id, "error": str(exc)}
            )
            return Settlement.REQUEUE
        except Exception:
            logger.exception("task failed", extra={"task_id": task.task_id})
            return Settlement.REQUEUE
        if outcome is Outcome.UNKNOWN_TASK:
            logger.warning(
                "message rejected", extra={"task_id": task.task_id, "reason": "unknown task"}
            )
            return Settlement.REJECT
        return Settlement.ACK
