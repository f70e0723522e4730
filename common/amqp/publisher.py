"""The TaskPublisher port on RabbitMQ: the one way a task message is published.

Every publish (the API's first one, the outbox dispatcher's, a worker's retry, a re-drive) is
persistent, `mandatory` (an unroutable message is an error, not silently dropped) and
confirmed by the broker, within PUBLISH_TIMEOUT_SECONDS. Messages published meanwhile go out
in one write (common.batching, common.amqp._confirms), each still confirmed on its own. A
publish left unconfirmed drops the session: a broker that stopped answering is reconnected
to instead of waited on, and until then publishes fail at once. So does a nack while the work
queue has room (a channel RabbitMQ 3.10 keeps nacking, see `_after_nack`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aio_pika.abc import AbstractChannel
from aiormq.exceptions import DeliveryError
from pamqp import commands as spec

from common.amqp._confirms import Outgoing, publish_batch
from common.amqp.errors import translated
from common.amqp.link import BrokerSession
from common.amqp.spans import publishing
from common.amqp.topology import Topology
from common.batching import Batcher
from common.errors import BrokerUnavailable
from common.messages import TaskMessage

ATTEMPTS_HEADER = "x-task-attempts"  # attempts already made; RabbitMQ 4 ignores x-death here
LOOKUPS_HEADER = "x-task-lookups"  # times the task's row was looked for and not found
_PERSISTENT = 2


class AmqpTaskPublisher:
    def __init__(self, topology: Topology, *, timeout: float, max_batch: int = 500) -> None:
        self._topology = topology
        self._timeout = timeout
        self._session: BrokerSession | None = None
        self._channel: AbstractChannel | None = None
        self._nack_check: asyncio.Task[None] | None = None
        self._sends = Batcher(
            self._send_batch, max_batch=max_batch, timeout=timeout, expired=self._expired
        )

    def attach(self, session: BrokerSession, channel: AbstractChannel) -> None:
        """Publish on `channel` (with publisher confirms) of `session` from now on."""
        self._session, self._channel = session, channel

    @property
    def is_open(self) -> bool:
        session, channel = self._session, self._channel
        return (
            session is not None and session.alive and channel is not None and not channel.is_closed
        )

    async def publish(
        self,
        message: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        outgoing = self._outgoing(
            message, attempts=attempts, lookups=lookups, delay_seconds=delay_seconds
        )
        # The hot path of every request: the batcher bounds the send, and one timer per batch
        # the confirms (_send_batch), instead of a timeout per call. `publishing` puts the
        # trace context in the headers and, with tracing on, is the publish's span.
        with publishing(outgoing), translated("publish", timeout=self._timeout):
            confirmation = await self._sends.submit(outgoing)
            try:
                await confirmation
            except DeliveryError:
                self._after_nack()
                raise

    async def queue_depth(self) -> int:
        """The work queue's ready messages: a passive declare on the publishing channel."""
        channel = self._channel
        if channel is None or not self.is_open:
            raise BrokerUnavailable("RabbitMQ: not connected")
        async with self._answered("queue depth"):
            queue = await channel.declare_queue(self._topology.work_queue, passive=True)
        return int(queue.declaration_result.message_count or 0)

    async def ping(self) -> None:
        """A passive declare of the retry exchange: one round trip on the publishing channel."""
        channel = self._channel
        if channel is None or not self.is_open:
            raise BrokerUnavailable("RabbitMQ: not connected")
        async with self._answered("ping"):
            await channel.get_exchange(self._topology.retry_exchange, ensure=True)

    @contextlib.asynccontextmanager
    async def _answered(self, what: str) -> AsyncIterator[None]:
        """The block within PUBLISH_TIMEOUT_SECONDS, or BrokerUnavailable; no answer in time
        also drops the session, so that publishes fail at once until a new one is up."""
        session = self._session
        with translated(what, timeout=self._timeout):
            try:
                async with asyncio.timeout(self._timeout):
                    yield
            except TimeoutError:
                if session is not None:
                    session.drop(f"no answer to a {what} within {self._timeout:g} s")
                raise

    def _outgoing(
        self, message: TaskMessage, *, attempts: int, lookups: int, delay_seconds: float
    ) -> Outgoing:
        """The frame contents of a task message, built straight as AMQP properties (a
        twentieth of the cost of an aio_pika.Message): to the work queue, or for a delay to
        the retry tier that holds it at least that long, expiring after exactly the delay."""
        headers: dict[str, Any] = {ATTEMPTS_HEADER: attempts}
        if lookups:
            headers[LOOKUPS_HEADER] = lookups
        expiration: str | None = None
        exchange, routing_key = "", self._topology.work_queue
        if delay_seconds > 0:
            tier_ms = self._topology.retry_tier(delay_seconds)
            exchange, routing_key = (
                self._topology.retry_exchange,
                self._topology.retry_queue(tier_ms),
            )
            expiration = str(min(max(1, round(delay_seconds * 1000)), tier_ms))
        properties = spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=_PERSISTENT,
            message_id=message.task_id,
            headers=headers,
            priority=0,
            expiration=expiration,
        )
        deadline = asyncio.get_running_loop().time() + self._timeout
        return Outgoing(message.encode(), properties, exchange, routing_key, deadline)

    async def _send_batch(self, batch: list[Outgoing]) -> list[asyncio.Future[object]]:
        """Write a batch in one go; one confirmation future per message. Sending does not wait
        for the broker, so the next batch can go out while this one is being confirmed; what
        is not confirmed within the timeout fails (one timer per batch)."""
        channel = self._channel
        if channel is None or not self.is_open:
            raise BrokerUnavailable("RabbitMQ: not connected")
        with translated("publish"):
            underlay = await channel.get_underlay_channel()
            futures = await publish_batch(underlay, batch)
        # The oldest message's deadline, which the batcher met by sending it in time.
        asyncio.get_running_loop().call_at(batch[0].deadline, self._expire_unconfirmed, futures)
        return futures

    def _after_nack(self) -> None:
        """A full work queue nacks (x-overflow reject-publish). A nack while it has room means
        the channel is no use: RabbitMQ 3.10 nacks every publish, for good, on a channel that
        first published to a quorum queue while its leader was being elected again after a
        node crashed (a client fails over faster than that). Then the session is dropped, and
        the link connects again, with new channels. One check at a time."""
        if self._nack_check is None or self._nack_check.done():
            self._nack_check = asyncio.create_task(self._drop_if_room(self._session))

    async def _drop_if_room(self, session: BrokerSession | None) -> None:
        try:
            depth = await self.queue_depth()
        except BrokerUnavailable:
            return  # no answer: _answered dropped the session already, or it is gone
        if session is not None and depth < self._topology.max_length:
            session.drop("a publish was nacked while the work queue had room")

    def _expire_unconfirmed(self, futures: list[asyncio.Future[object]]) -> None:
        for future in futures:
            if not future.done():
                future.set_exception(self._expired())

    def _expired(self) -> BrokerUnavailable:
        """A publish the broker did not confirm in time: the session is no use any more."""
        if self._session is not None:
            self._session.drop(f"a publish was not confirmed within {self._timeout:g} s")
        return BrokerUnavailable(f"RabbitMQ: publish: no answer within {self._timeout:g} s")
