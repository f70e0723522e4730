"""What a service opens on RabbitMQ: the supervised link, the publisher on it and, for the
worker, its subscription to the work queue.

Every (re)connect declares the topology, attaches the publisher to a new confirming channel
and subscribes again on a channel of its own.
"""

from __future__ import annotations

from common.amqp.consumer import (
    DeadLetterReader,
    OnDelivery,
    Subscription,
    dead_letter_reader,
    subscribe,
)
from common.amqp.link import BrokerLink, BrokerSession
from common.amqp.publisher import AmqpTaskPublisher
from common.amqp.signals import Signals
from common.amqp.topology import Topology
from common.errors import BrokerUnavailable
from common.settings import Settings


class Broker:
    """Made before the event loop runs; `start()` connects in the background and keeps
    connecting again for the life of the process."""

    def __init__(self, settings: Settings, *, name: str) -> None:
        self.topology = Topology.from_settings(settings)
        self._timeout = settings.publish_timeout_seconds
        self.publisher = AmqpTaskPublisher(self.topology, timeout=self._timeout)
        self.signals = Signals(settings.task_queue, timeout=self._timeout)
        self._link = BrokerLink(settings, name=name, on_connect=self._on_connect)
        self._consumer: tuple[OnDelivery, int] | None = None
        self._subscription: Subscription | None = None

    def consume(self, on_delivery: OnDelivery, *, prefetch: int) -> None:
        """Deliver the work queue's messages to `on_delivery`, at most `prefetch` unsettled
        at a time, on every session from the next one on (call before `start`)."""
        self._consumer = (on_delivery, prefetch)

    @property
    def connected(self) -> bool:
        return self._link.connected

    @property
    def consuming(self) -> bool:
        """Whether the work queue delivers to this process now: subscribed on a session that
        is up, and not told to stop (`stop_consuming`)."""
        subscription = self._subscription
        return self._consumer is not None and subscription is not None and subscription.held

    def start(self) -> None:
        self._link.start()

    async def wait_connected(self, seconds: float) -> bool:
        return await self._link.wait_connected(seconds)

    async def stop_consuming(self) -> None:
        """Take no new deliveries; those in flight go on."""
        self._consumer = None
        if self._subscription is not None:
            await self._subscription.cancel()

    async def dead_letters(self) -> DeadLetterReader:
        """A reader of the dead-letter queue on the current session."""
        session = self._link.session
        if session is None or not session.alive:
            raise BrokerUnavailable("RabbitMQ: not connected")
        return await dead_letter_reader(session, self.topology, timeout_seconds=self._timeout)

    async def close(self) -> None:
        """Stop the link and close the connection; what is unsettled goes back to its queue."""
        await self._link.close()

    async def _on_connect(self, session: BrokerSession) -> None:
        channel = await session.channel(publisher_confirms=True)
        await self.topology.declare(channel, probe=session.probe_channel)
        self.publisher.attach(session, channel)
        await self.signals.attach(await session.channel())
        self._subscription = None
        if self._consumer is not None:
            on_delivery, prefetch = self._consumer
            self._subscription = await subscribe(
                session,
                self.topology,
                prefetch=prefetch,
                on_delivery=on_delivery,
                timeout_seconds=self._timeout,
            )
