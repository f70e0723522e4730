"""The RabbitMQ objects both services declare, their names and arguments (all from settings).

    work queue  TASK_QUEUE ──reject / delivery limit──▶ TASK_QUEUE.dlx ──▶ TASK_QUEUE.dlq
        ▲
        └── TTL expiry ── TASK_QUEUE.retry.<ms>ms ◀── TASK_QUEUE.retry (routing key = queue)

Retries wait in one queue per delay tier: every message in a tier has the same TTL, so
expiring from the head (all that quorum queues do) releases them in order.
Declaring is idempotent. Changing the arguments of an existing queue (TASK_QUEUE_TYPE,
TASK_QUEUE_DELIVERY_LIMIT) is refused by the broker (PRECONDITION_FAILED), so such a change
needs the old queues deleted first; other retry delays just add tier queues of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractQueue

from common.settings import Settings


@dataclass(frozen=True, slots=True)
class Topology:
    work_queue: str
    queue_type: str
    delivery_limit: int
    retry_delays_ms: tuple[int, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        delays = sorted({max(1, round(s * 1000)) for s in settings.retry_delays_seconds})
        return cls(
            work_queue=settings.task_queue,
            queue_type=settings.task_queue_type,
            delivery_limit=settings.task_queue_delivery_limit,
            retry_delays_ms=tuple(delays),
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
        arguments = self._base_arguments() | {"x-dead-letter-exchange": self.dead_letter_exchange}
        if self.queue_type == "quorum":
            arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def retry_queue_arguments(self, delay_ms: int) -> dict[str, Any]:
        return self._base_arguments() | {
            "x-message-ttl": delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.work_queue,
        }

    async def declare(self, channel: AbstractChannel) -> AbstractQueue:
        """Declare everything; returns the work queue."""
        dlx = await channel.declare_exchange(
            self.dead_letter_exchange, ExchangeType.FANOUT, durable=True
        )
        dlq = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments={"x-queue-type": self.queue_type}
        )
        await dlq.bind(dlx)
        work = await channel.declare_queue(
            self.work_queue, durable=True, arguments=self.work_queue_arguments()
        )
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
