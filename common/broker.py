"""RabbitMQ with aio-pika: a connection kept open, and confirmed publishing.

We supervise the connection ourselves instead of relying on aio-pika's robust connection,
which has missed restoring consumers after a broker restart (aio-pika#231, #334): after every
(re)connect, `on_connect` declares the topology, opens the channels and registers consumers
again; losing any channel or the connection starts that over, with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from pamqp import commands as spec

from common.batching import Batcher
from common.confirms import Outgoing, publish_batch
from common.errors import BrokerUnavailable
from common.messages import TaskMessage
from common.settings import Settings

logger = logging.getLogger(__name__)

UNAVAILABLE = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)

PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
ATTEMPTS_HEADER = "x-task-attempts"  # attempts already made; RabbitMQ 4 ignores x-death here
LOOKUPS_HEADER = "x-task-lookups"  # times the task's row was looked for and not found


@dataclass
class BrokerSession:
    """One live connection; any of its channels closing ends the session."""

    connection: AbstractConnection
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.connection.close_callbacks.add(lambda *_: self.lost.set())

    async def channel(self, *, publisher_confirms: bool = False) -> AbstractChannel:
        channel = await self.connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=publisher_confirms
        )
        channel.close_callbacks.add(lambda *_: self.lost.set())
        return channel


OnConnect = Callable[[BrokerSession], Awaitable[None]]


async def connect(settings: Settings, *, name: str) -> AbstractConnection:
    """One AMQP connection with the settings' address and credentials, named `name` in the
    management UI; PUBLISH_TIMEOUT_SECONDS bounds the connect."""
    return await aio_pika.connect(
        host=settings.rabbitmq_host,
        port=settings.rabbitmq_port,
        login=settings.rabbitmq_user,
        password=settings.rabbitmq_password.get_secret_value(),
        virtualhost=settings.rabbitmq_vhost,
        timeout=settings.publish_timeout_seconds,
        client_properties={"connection_name": name},
    )


class BrokerLink:
    """Keeps one AMQP connection open for the life of the process."""

    def __init__(self, settings: Settings, *, name: str, on_connect: OnConnect) -> None:
        self._settings = settings
        self._name = name
        self._on_connect = on_connect
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: BrokerSession | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"broker-link-{self._name}")

    async def wait_connected(self, seconds: float) -> bool:
        """Wait up to `seconds` for the first session; True if connected."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._connected.wait()
        return self.connected

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await _close_quietly(self._session.connection)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            if await self._session_once():
                delay = 0.1
            else:
                delay = min(delay * 2, self._settings.broker_reconnect_max_seconds)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _session_once(self) -> bool:
        """Connect, set up and serve until the session is lost; False if it never got ready
        (unreachable, or the setup failed: both back off)."""
        try:
            session = BrokerSession(await connect(self._settings, name=self._name))
        except UNAVAILABLE as exc:
            logger.warning("broker unreachable", extra={"link": self._name, "error": repr(exc)})
            return False
        self._session = session
        try:
            await self._on_connect(session)
            self._connected.set()
            logger.info("broker connected", extra={"link": self._name})
            await session.lost.wait()
            logger.warning("broker connection lost", extra={"link": self._name})
            return True
        except UNAVAILABLE as exc:
            logger.warning("broker setup failed", extra={"link": self._name, "error": repr(exc)})
            return False
        finally:
            self._connected.clear()
            self._session = None
            await _close_quietly(session.connection)


async def _close_quietly(connection: AbstractConnection) -> None:
    with contextlib.suppress(*UNAVAILABLE, RuntimeError):
        await connection.close()


class MessagePublisher(Protocol):
    async def publish(
        self, message: aio_pika.Message, *, exchange: str, routing_key: str
    ) -> None: ...


class AmqpPublisher:
    """Publishes with publisher confirms, `mandatory` and a timeout, on the channel that the
    current broker session attached. Not attached means not connected: fail at once."""

    def __init__(self, *, timeout: float) -> None:
        self._timeout = timeout
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    def attach(self, channel: AbstractChannel) -> None:
        self._channel = channel
        self._exchanges = {"": channel.default_exchange}

    @property
    def is_open(self) -> bool:
        return self._channel is not None and not self._channel.is_closed

    async def publish(self, message: aio_pika.Message, *, exchange: str, routing_key: str) -> None:
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            target = self._exchanges.get(exchange)
            if target is None:
                target = await channel.get_exchange(exchange, ensure=False)
                self._exchanges[exchange] = target
            # The timeout matters: a publish on a dying connection can otherwise hang.
            async with asyncio.timeout(self._timeout):
                await target.publish(message, routing_key=routing_key, mandatory=True)
        except UNAVAILABLE as exc:
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc

    async def send_many(
        self, messages: Sequence[Outgoing], *, exchange: str, routing_key: str
    ) -> list[asyncio.Future[object]]:
        """Write a batch in one go (common.confirms); one confirmation future per message,
        for `confirmed`. Sending does not wait for the broker, so the next batch can go out
        while this one is being confirmed. Whatever is not confirmed within the timeout
        fails with BrokerUnavailable (one timer per batch, not one per message)."""
        channel = self._channel
        if channel is None or channel.is_closed:
            raise BrokerUnavailable("not connected to RabbitMQ")
        try:
            async with asyncio.timeout(self._timeout):
                underlay = await channel.get_underlay_channel()
                futures = await publish_batch(
                    underlay, messages, exchange=exchange, routing_key=routing_key
                )
        except UNAVAILABLE as exc:
            raise BrokerUnavailable(f"publish not sent: {exc!r}") from exc
        asyncio.get_running_loop().call_later(
            self._timeout, expire_unconfirmed, futures, self._timeout
        )
        return futures

    @staticmethod
    async def confirmed(confirmation: asyncio.Future[object]) -> None:
        """Wait for a message of `send_many` to be confirmed; raises BrokerUnavailable if it
        was not (nacked, returned, channel lost, or not within the timeout)."""
        if confirmation.cancelled():
            raise BrokerUnavailable("publish not confirmed: cancelled")
        try:
            await confirmation
        except BrokerUnavailable:
            raise
        except UNAVAILABLE as exc:
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc


def expire_unconfirmed(futures: Sequence[asyncio.Future[object]], timeout: float) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(BrokerUnavailable(f"publish not confirmed within {timeout} s"))


def task_outgoing(message: TaskMessage) -> Outgoing:
    """A task's first message, as task_amqp_message(message) would send it, built straight
    as AMQP properties (a twentieth of the cost; a unit test holds the two equal)."""
    properties = spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        message_id=message.task_id,
        headers={ATTEMPTS_HEADER: 0},
        priority=0,
    )
    return Outgoing(message.encode(), properties)


def task_amqp_message(
    message: TaskMessage,
    *,
    attempts: int = 0,
    lookups: int = 0,
    expiration_seconds: float | None = None,
) -> aio_pika.Message:
    headers: dict[str, Any] = {ATTEMPTS_HEADER: attempts}
    if lookups:
        headers[LOOKUPS_HEADER] = lookups
    return aio_pika.Message(
        body=message.encode(),
        content_type="application/json",
        delivery_mode=PERSISTENT,
        message_id=message.task_id,
        headers=headers,
        expiration=expiration_seconds,
    )


class TaskPublisher:
    """Publishes a task's first message to the work queue. Messages published meanwhile go
    out in one write (common.batching), each still confirmed on its own."""

    def __init__(self, publisher: AmqpPublisher, *, queue: str, max_batch: int = 500) -> None:
        self._publisher = publisher
        self._queue = queue
        self._sends = Batcher(self._send_batch, max_batch=max_batch)

    @property
    def is_open(self) -> bool:
        return self._publisher.is_open

    async def publish(self, message: TaskMessage) -> None:
        confirmation = await self._sends.submit(message)
        await self._publisher.confirmed(confirmation)

    async def _send_batch(self, messages: list[TaskMessage]) -> list[asyncio.Future[object]]:
        return await self._publisher.send_many(
            [task_outgoing(message) for message in messages], exchange="", routing_key=self._queue
        )
