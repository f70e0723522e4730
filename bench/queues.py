"""The bench's own view of the broker: queue depths, purges and bulk publishing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import ChannelClosed

from common.messages import TaskMessage
from common.settings import Settings
from common.task_types import DEFAULT_TYPE

# Publishes awaiting their confirm at once when queueing tasks in bulk.
_PUBLISH_WINDOW = 500


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Queues:
    def __init__(self, connection: AbstractRobustConnection, settings: Settings) -> None:
        self._connection = connection
        self._settings = settings

    @property
    def task_queue(self) -> str:
        return self._settings.task_queue

    @property
    def broker_version(self) -> str:
        properties = self._connection.transport.connection.server_properties  # type: ignore[union-attr]
        product, version = (properties.get(key, b"?") for key in ("product", "version"))
        return f"{_text(product)} {_text(version)}"

    async def _passive(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue; (0, 0) when it does not exist yet."""
        async with self._connection.channel() as channel:
            try:
                queue: AbstractQueue = await channel.declare_queue(name, passive=True)
            except ChannelClosed:
                return 0, 0
            result = queue.declaration_result
            return int(result.message_count or 0), int(result.consumer_count or 0)

    async def depth(self, name: str) -> int:
        return (await self._passive(name))[0]

    async def consumers(self, name: str) -> int:
        return (await self._passive(name))[1]

    async def purge(self, name: str) -> None:
        async with self._connection.channel() as channel:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except ChannelClosed:
                return
            await queue.purge()

    async def publish_tasks(
        self,
        ids: Sequence[str],
        *,
        task_type: str = DEFAULT_TYPE,
        payloads: Sequence[dict[str, Any]] | None = None,
    ) -> None:
        """Publish one task message per id, as the API does, each confirmed by the broker:
        of `task_type`, with each id's payload from `payloads` (in the same order; none when
        not given).

        The services declare the queue (with whatever arguments they give it); this only
        publishes to it, and a missing queue fails the publish instead of losing messages."""
        each: Sequence[dict[str, Any] | None] = [None] * len(ids) if payloads is None else payloads
        messages = [
            TaskMessage(
                task_id=task_id,
                title="bench task",
                description="a row loaded by the benchmark",
                metadata=None,
                type=task_type,
                payload=payload,
            )
            for task_id, payload in zip(ids, each, strict=True)
        ]
        async with self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        ) as channel:
            exchange = channel.default_exchange
            for start in range(0, len(messages), _PUBLISH_WINDOW):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                body=message.encode(),
                                content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                message_id=message.task_id,
                            ),
                            routing_key=self.task_queue,
                            mandatory=True,
                        )
                        for message in messages[start : start + _PUBLISH_WINDOW]
                    )
                )
