"""Task messages coming in: the worker's subscription to the work queue, and the re-drive's
reader of the dead-letter queue. Each message is handed on as a `Delivery` (common.ports),
whose settling is bounded by PUBLISH_TIMEOUT_SECONDS and fails only as BrokerUnavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from common.amqp.errors import translated
from common.amqp.link import BrokerSession
from common.amqp.publisher import ATTEMPTS_HEADER, LOOKUPS_HEADER
from common.amqp.spans import processing
from common.amqp.topology import Topology
from common.ports import Delivery

OnDelivery = Callable[[Delivery], Awaitable[None]]


class AmqpDelivery:
    __slots__ = ("_message", "_timeout")

    def __init__(self, message: AbstractIncomingMessage, *, timeout: float) -> None:
        self._message = message
        self._timeout = timeout

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def redelivered(self) -> bool:
        return bool(self._message.redelivered)

    @property
    def attempts(self) -> int:
        return self._header(ATTEMPTS_HEADER)

    @property
    def lookups(self) -> int:
        return self._header(LOOKUPS_HEADER)

    def _header(self, name: str) -> int:
        value = (self._message.headers or {}).get(name, 0)
        return value if isinstance(value, int) and value >= 0 else 0

    async def ack(self) -> None:
        await self._settle("ack", self._message.ack)

    async def requeue(self) -> None:
        await self._settle("requeue", lambda: self._message.nack(requeue=True))

    async def dead_letter(self) -> None:
        await self._settle("dead-letter", lambda: self._message.reject(requeue=False))

    async def _settle(self, what: str, settle: Callable[[], Awaitable[None]]) -> None:
        with translated(what, timeout=self._timeout):
            async with asyncio.timeout(self._timeout):
                await settle()


@dataclass
class Subscription:
    """The worker's consumer on the work queue of one session."""

    queue: AbstractQueue
    tag: str
    timeout: float
    session: BrokerSession

    @property
    def held(self) -> bool:
        """Whether the broker still delivers to it: its session is up (one the broker
        cancels ends its session, see `subscribe`)."""
        return self.session.alive

    async def cancel(self) -> None:
        """Take no new deliveries; those in flight go on. Best effort: a lost connection
        takes no deliveries either."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await self.queue.cancel(self.tag)


async def subscribe(
    session: BrokerSession,
    topology: Topology,
    *,
    prefetch: int,
    on_delivery: OnDelivery,
    timeout_seconds: float,
) -> Subscription:
    channel = await session.channel()
    # The broker cancels a consumer whose queue went away (deleted, or lost with its node) and
    # delivers nothing more: the session ends, and the next one declares the queue and
    # subscribes again (as aio-pika's robust channel does). Our own cancel is a CancelOk.
    underlay = await channel.get_underlay_channel()
    underlay.on_consumer_cancel_callbacks.add(
        lambda _: session.drop(f"the broker cancelled the consumer on {topology.work_queue}")
    )
    # The prefetch bounds the tasks in flight in this process.
    await channel.set_qos(prefetch_count=prefetch)
    queue = await topology.declare(channel, probe=session.probe_channel)

    async def on_message(message: AbstractIncomingMessage) -> None:
        # Its trace (and span, with tracing on) and its task_id on every record logged.
        with processing(message, queue=topology.work_queue):
            await on_delivery(AmqpDelivery(message, timeout=timeout_seconds))

    tag = await queue.consume(on_message)
    return Subscription(queue, tag, timeout_seconds, session)


class DeadLetterReader:
    """The DeadLetters port: messages taken one at a time and held unacked until settled, so
    that each is seen once; those left unsettled go back when the session closes."""

    def __init__(self, queue: AbstractQueue, *, timeout: float) -> None:
        self._queue = queue
        self._timeout = timeout

    async def take(self) -> AmqpDelivery | None:
        with translated("reading the dead-letter queue", timeout=self._timeout):
            async with asyncio.timeout(self._timeout):
                message = await self._queue.get(no_ack=False, fail=False)
        return None if message is None else AmqpDelivery(message, timeout=self._timeout)


async def dead_letter_reader(
    session: BrokerSession, topology: Topology, *, timeout_seconds: float
) -> DeadLetterReader:
    with translated("opening the dead-letter queue", timeout=timeout_seconds):
        async with asyncio.timeout(timeout_seconds):
            channel = await session.channel()
            queue = await channel.get_queue(topology.dead_letter_queue, ensure=False)
    return DeadLetterReader(queue, timeout=timeout_seconds)
