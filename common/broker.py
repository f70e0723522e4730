"""RabbitMQ with aio-pika: the connection, the queue topology and the task publisher."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from common.errors import BrokerUnavailable
from common.messages import TaskMessage
from common.settings import Settings

logger = logging.getLogger(__name__)

_UNAVAILABLE = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


async def connect_broker(settings: Settings) -> AbstractRobustConnection:
    """A robust connection (it reconnects by itself); BrokerUnavailable if the first try fails."""
    try:
        return await aio_pika.connect_robust(
            host=settings.rabbitmq_host,
            port=settings.rabbitmq_port,
            login=settings.rabbitmq_user,
            password=settings.rabbitmq_password.get_secret_value(),
            virtualhost=settings.rabbitmq_vhost,
            timeout=settings.publish_timeout_seconds,
            client_properties={"connection_name": "task-service"},
        )
    except _UNAVAILABLE as exc:
        raise BrokerUnavailable(f"cannot connect to RabbitMQ: {exc}") from exc


def queue_arguments(settings: Settings) -> dict[str, Any]:
    return {"x-queue-type": settings.task_queue_type}


async def declare_task_queue(channel: AbstractChannel, settings: Settings) -> AbstractQueue:
    """Declare the durable work queue; declaring it again with the same settings is a no-op."""
    return await channel.declare_queue(
        settings.task_queue, durable=True, arguments=queue_arguments(settings)
    )


class AmqpTaskPublisher:
    """Publishes persistent task messages and waits for the broker's confirm."""

    def __init__(self, channel: AbstractRobustChannel, *, queue: str, timeout: float) -> None:
        self._channel = channel
        self._queue = queue
        self._timeout = timeout

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, settings: Settings
    ) -> AmqpTaskPublisher:
        # on_return_raises: an unroutable message fails the publish instead of vanishing.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        assert isinstance(channel, AbstractRobustChannel)
        await declare_task_queue(channel, settings)
        return cls(channel, queue=settings.task_queue, timeout=settings.publish_timeout_seconds)

    @property
    def is_open(self) -> bool:
        return not self._channel.is_closed

    async def publish(self, message: TaskMessage) -> None:
        amqp_message = aio_pika.Message(
            body=message.encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.task_id,
        )
        try:
            # The timeout matters: publishing on a channel that is reconnecting can hang.
            await asyncio.wait_for(
                self._channel.default_exchange.publish(
                    amqp_message, routing_key=self._queue, mandatory=True
                ),
                timeout=self._timeout,
            )
        except _UNAVAILABLE as exc:
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc

    async def close(self) -> None:
        await self._channel.close()
