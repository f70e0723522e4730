"""The RabbitMQ objects both services declare, their names and arguments (all from settings).

    work queue  TASK_QUEUE ──reject / delivery limit──▶ TASK_QUEUE.dlx ──▶ TASK_QUEUE.dlq
        ▲
        └── TTL expiry ── TASK_QUEUE.retry.<ms>ms ◀── TASK_QUEUE.retry (routing key = queue)

Retries wait in one queue per delay tier: every message in a tier has the same TTL, so
expiring from the head (all that quorum queues do) releases them in order.
The work queue holds at most MAX_QUEUE_LENGTH ready messages; past it the broker refuses a
publish (`x-overflow: reject-publish`, a nack), which the publishers treat as any failed
publish: the task stays in the outbox, dispatched again later.

Declaring is idempotent. Changing the arguments of an existing queue (TASK_QUEUE_TYPE,
TASK_QUEUE_DELIVERY_LIMIT, MAX_QUEUE_LENGTH) is refused by the broker (PRECONDITION_FAILED):
for the work queue, which holds the messages of tasks already dispatched, the queue is then
used as it is, with a warning (a policy can change its length without losing a message;
docs/operations.md); the retry tiers and the dead-letter queue must be deleted for such a
change. Other retry delays just add tier queues of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue
from aio_pika.exceptions import ChannelPreconditionFailed

from common.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Topology:
    work_queue: str
    queue_type: str
    delivery_limit: int
    retry_delays_ms: tuple[int, ...]
    max_length: int = 1_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        delays = sorted({max(1, round(s * 1000)) for s in settings.retry_delays_seconds})
        return cls(
            work_queue=settings.task_queue,
            queue_type=settings.task_queue_type,
            delivery_limit=settings.task_queue_delivery_limit,
            retry_delays_ms=tuple(delays),
            max_length=settings.max_queue_length,
        )

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.work_queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.work_queue}.dlq"

    @property
    def retry_exchange(self) -> str:
        return f"{self.work_queue}.retry"

    def retry_queue(self, delay_ms: int) -> str:
        return f"{self.work_queue}.retry.{delay_ms}ms"

    def retry_tier(self, delay_seconds: float) -> int:
        """The smallest tier (in ms) that is at least `delay_seconds`, or the largest."""
        wanted = delay_seconds * 1000
        return next((ms for ms in self.retry_delays_ms if ms >= wanted), self.retry_delays_ms[-1])

    def _base_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type}
        if self.queue_type == "quorum":
            # Dead-letter at least once: the message leaves only when the target confirmed it.
            arguments |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return arguments

    def work_queue_arguments(self) -> dict[str, Any]:
        arguments = self._base_arguments() | {
            "x-dead-letter-exchange": self.dead_letter_exchange,
            "x-max-length": self.max_length,
            "x-overflow": "reject-publish",
        }
        if self.queue_type == "quorum":
            arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def retry_queue_arguments(self, delay_ms: int) -> dict[str, Any]:
        return self._base_arguments() | {
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.work_queue,
        }

    async def declare(
        self,
        channel: AbstractChannel,
        *,
        probe: Callable[[], Awaitable[AbstractChannel]] | None = None,
    ) -> AbstractQueue:
        """Declare everything; returns the work queue. With `probe` (a new channel of the
        same session), a work queue that exists with other arguments is taken as it is."""
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, ExchangeType.FANOUT, durable=True
        )
        dlq = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments={"x-queue-type": self.queue_type}
        )
        await dlq.bind(dlx)
        if probe is None or await self._declared_as_asked(probe):
            work = await channel.declare_queue(
                self.work_queue, durable=True, arguments=self.work_queue_arguments()
            )
        else:
            work = await channel.declare_queue(self.work_queue, passive=True)
        retry = await channel.declare_exchange(
            self.retry_exchange, ExchangeType.DIRECT, durable=True
        )
        for delay_ms in self.retry_delays_ms:
            name = self.retry_queue(delay_ms)
            queue = await channel.declare_queue(
                name, durable=True, arguments=self.retry_queue_arguments(delay_ms)
            )
            await queue.bind(retry, routing_key=name)
        return work

    async def _declared_as_asked(self, probe: Callable[[], Awaitable[AbstractChannel]]) -> bool:
        """Whether the work queue is (or now is) declared with this topology's arguments,
        tried on a channel of its own: the broker closes a channel whose declare it refuses."""
        channel = await probe()
        try:
            await channel.declare_queue(
                self.work_queue, durable=True, arguments=self.work_queue_arguments()
            )
        except ChannelPreconditionFailed as exc:
            logger.warning(
                "work queue kept with its own arguments",
                extra={"queue": self.work_queue, "reason": str(exc)},
            )
            return False
        finally:
            if not channel.is_closed:
                await channel.close()
        return True
