"""Turns deliveries into `process_task` calls and outcomes into ack, retry or dead-letter.

Every delivery is settled only after its outcome is committed in MySQL:
- ack: done (completed, or nothing left to do);
- retry: a copy goes to the retry queues through the publisher (confirmed), then the
  original is acked;
- postpone: another claim holds the task, so a copy comes back once that claim's lease is
  over (if its holder is gone, this copy takes the task over), then the original is acked;
- dead-letter: rejected without requeue, so the broker moves it to TASK_QUEUE.dlq;
- requeue: nack with requeue after a short pause, when even the retry could not be published.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from dataclasses import dataclass, field

from common.errors import BrokerUnavailable, DatabaseUnavailable, InvalidTaskMessage
from common.messages import TaskMessage, decode_task_message
from common.ports import Delivery, TaskPublisher, TaskRepository
from models.outcomes import Outcome
from services.metrics import WorkerMetrics
from services.processor import Handlers, give_up_on_type, process_task
from services.retry_policy import RetryPolicy
from services.running import RunningWork

logger = logging.getLogger(__name__)


class Settlement(enum.Enum):
    ACK = "ack"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"


@dataclass
class TaskConsumer:
    repository: TaskRepository
    handlers: Handlers
    policy: RetryPolicy
    publisher: TaskPublisher
    lease_seconds: float
    requeue_pause_seconds: float
    unknown_task_max_lookups: int = 3
    unknown_type_max_attempts: int = 5
    running: RunningWork = field(default_factory=RunningWork)
    metrics: WorkerMetrics | None = None
    in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no delivery is being processed."""
        await self._idle.wait()

    async def on_delivery(self, delivery: Delivery) -> None:
        """Process and settle one delivery; never raises."""
        self.in_flight += 1
        self._idle.clear()
        try:
            try:
                settlement = await self._decide(delivery)
            except Exception:
                logger.exception("unexpected error", extra={"message_id": delivery.message_id})
                settlement = Settlement.REQUEUE
            await self._settle(delivery, settlement)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def _decide(self, delivery: Delivery) -> Settlement:
        try:
            task = decode_task_message(delivery.body)
        except InvalidTaskMessage as exc:
            logger.warning(
                "message dead-lettered",
                extra={"reason": str(exc), "message_id": delivery.message_id},
            )
            self._dead_lettered(None)
            return Settlement.DEAD_LETTER
        attempts = delivery.attempts
        taken_at, started = time.time(), time.perf_counter()
        try:
            result = await process_task(
                repository=self.repository,
                message=task,
                handlers=self.handlers,
                max_attempts=self.policy.max_attempts,
                lease_seconds=self.lease_seconds,
                take_over=delivery.redelivered or attempts > 0,
                running=self.running,
            )
        except DatabaseUnavailable as exc:
            # Not the task's fault, and FAILED could not be written anyway: back off and retry.
            logger.warning(
                "database unavailable", extra={"task_id": task.task_id, "error": str(exc)}
            )
            self._database_up(False)
            return await self._retry(task, attempts=attempts + 1, lookups=0)
        self._database_up(True)
        if self.metrics is not None:
            seconds = time.perf_counter() - started
            self.metrics.processed(
                task.type, result.outcome, claimed_at=taken_at, seconds=seconds, due_at=task.due_at
            )
        if result.outcome is Outcome.UNKNOWN_TASK:
            return await self._retry_lookup(delivery, task)
        if result.outcome is Outcome.NO_HANDLER:
            return await self._pass_on(delivery, task)
        if result.outcome is Outcome.DUPLICATE:
            return await self._postpone(delivery, task)
        if result.outcome is Outcome.RETRY:
            return await self._retry(task, attempts=result.attempts, lookups=0)
        if result.outcome is Outcome.FAILED:
            return Settlement.DEAD_LETTER
        return Settlement.ACK

    def _dead_lettered(self, task_type: str | None) -> None:
        if self.metrics is not None:
            self.metrics.dead_lettered(task_type)

    def _database_up(self, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.backend_state("database", up=up)

    async def _retry_lookup(self, delivery: Delivery, task: TaskMessage) -> Settlement:
        """A task id with no row: look again a few times, then dead-letter it (a poison
        message must not burn a retry budget, or loop)."""
        lookups = delivery.lookups + 1
        if lookups >= self.unknown_task_max_lookups:
            logger.warning(
                "message dead-lettered", extra={"task_id": task.task_id, "reason": "unknown task"}
            )
            self._dead_lettered(task.type)
            return Settlement.DEAD_LETTER
        return await self._retry(task, attempts=delivery.attempts, lookups=lookups)

    async def _pass_on(self, delivery: Delivery, task: TaskMessage) -> Settlement:
        """A type this worker cannot run (a newer API, an older worker): the message goes
        back to the queue after a backoff, for another worker; after
        UNKNOWN_TYPE_MAX_ATTEMPTS workers without a handler, the task is FAILED and its
        message dead-lettered. The count rides in the lookups header, which also counts the
        lookups of a missing row: a message that meets both is dead-lettered a little sooner."""
        tries = delivery.lookups + 1
        if tries >= self.unknown_type_max_attempts:
            try:
                result = await give_up_on_type(
                    repository=self.repository,
                    message=task,
                    lease_seconds=self.lease_seconds,
                    take_over=delivery.redelivered or delivery.attempts > 0,
                    tried=tries,
                )
            except DatabaseUnavailable as exc:
                logger.warning(
                    "database unavailable", extra={"task_id": task.task_id, "error": str(exc)}
                )
                return await self._retry(task, attempts=delivery.attempts, lookups=delivery.lookups)
            if result.outcome is not Outcome.FAILED:
                return Settlement.ACK
            self._dead_lettered(task.type)  # FAILED without an attempt: no worker has its type
            return Settlement.DEAD_LETTER
        return await self._retry(
            task, attempts=delivery.attempts, lookups=tries, delay_attempts=tries
        )

    async def _postpone(self, delivery: Delivery, task: TaskMessage) -> Settlement:
        """Not dropped: the holder may be gone for good (killed after its claim, or a claim
        that reached the database after its worker gave up on it), and then this message may
        be the last one for the task. The copy carries no attempts, so it takes the task
        over only once the lease has run out."""
        if not await self._copy_published(
            task,
            lookups=delivery.lookups,
            delay_seconds=self.lease_seconds,
            failed="duplicate not postponed",
        ):
            return Settlement.REQUEUE
        logger.info("duplicate postponed", extra={"task_id": task.task_id})
        return Settlement.ACK

    async def _retry(
        self, task: TaskMessage, *, attempts: int, lookups: int, delay_attempts: int | None = None
    ) -> Settlement:
        delay = self.policy.backoff_seconds(attempts if delay_attempts is None else delay_attempts)
        if not await self._copy_published(
            task,
            attempts=attempts,
            lookups=lookups,
            delay_seconds=delay,
            failed="retry not published",
        ):
            return Settlement.REQUEUE
        logger.info(
            "task retry scheduled",
            extra={"task_id": task.task_id, "attempt": attempts, "delay_ms": round(delay * 1000)},
        )
        return Settlement.ACK

    async def _copy_published(
        self,
        task: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int,
        delay_seconds: float,
        failed: str,
    ) -> bool:
        """Publish a delayed copy of the task's message, which replaces the delivery once
        confirmed; False (logged as `failed`) when the broker did not confirm it. The copy is
        due once its delay is over (its queue wait counts from then)."""
        task = dataclasses.replace(task, due_at=time.time() + delay_seconds)
        try:
            await self.publisher.publish(
                task, attempts=attempts, lookups=lookups, delay_seconds=delay_seconds
            )
        except BrokerUnavailable as exc:
            logger.warning(failed, extra={"task_id": task.task_id, "error": str(exc)})
            return False
        return True

    async def _settle(self, delivery: Delivery, settlement: Settlement) -> None:
        if settlement is Settlement.REQUEUE:
            # A short pause, so that an outage is not a hot redelivery loop.
            await asyncio.sleep(self.requeue_pause_seconds)
        try:
            if settlement is Settlement.ACK:
                await delivery.ack()
            elif settlement is Settlement.REQUEUE:
                await delivery.requeue()
            else:
                await delivery.dead_letter()
        except BrokerUnavailable as exc:
            # The channel is gone; the broker redelivers the message and the claim is idempotent.
            logger.warning("could not settle message", extra={"error": str(exc)})
        except Exception:
            logger.exception("could not settle message", extra={"message_id": delivery.message_id})
