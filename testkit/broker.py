"""Direct access to the test run's RabbitMQ vhost: publish like the services, look into queues."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from common.amqp import AmqpTaskPublisher, Topology
from common.amqp.link import BrokerSession, connect
from common.messages import TaskMessage
from common.settings import Settings

# The session of each channel broker_channel opened, for publish_task.
_SESSIONS: weakref.WeakKeyDictionary[AbstractChannel, BrokerSession] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def broker_channel(settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A confirming channel on a connection of its own, with the topology declared."""
    connection = await connect(settings, name="tests")
    try:
        session = BrokerSession(connection)
        channel = await session.channel(publisher_confirms=True)
        _SESSIONS[channel] = session
        await Topology.from_settings(settings).declare(channel)
        yield channel
    finally:
        await connection.close()


async def publish_task(
    channel: AbstractChannel, settings: Settings, message: TaskMessage, **options: Any
) -> None:
    """Publish `message` on `channel` through the services' one publish path (`options` as
    for TaskPublisher.publish)."""
    publisher = AmqpTaskPublisher(Topology.from_settings(settings), timeout=5)
    publisher.attach(_SESSIONS[channel], channel)
    await publisher.publish(message, **options)


async def publish_raw(channel: AbstractChannel, settings: Settings, body: bytes) -> None:
    await channel.default_exchange.publish(
        aio_pika.Message(body=body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=settings.task_queue,
    )


async def ready_messages(channel: AbstractChannel, queue: str) -> int:
    """Messages waiting in `queue` (not those delivered and not yet acked)."""
    declared = await channel.declare_queue(queue, passive=True)
    return declared.declaration_result.message_count or 0


async def take_all(
    channel: AbstractChannel, queue: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Get and ack every message waiting in `queue`."""
    found = []
    source = await channel.get_queue(queue, ensure=False)
    while (message := await source.get(fail=False, no_ack=True)) is not None:
        found.append(message)
    return found
