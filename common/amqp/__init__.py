"""The AMQP adapter: the only code that imports aio-pika, aiormq and pamqp.

    broker = Broker(settings, name="task-api")   # made anywhere; `start()` connects
    await broker.publisher.publish(message)      # the TaskPublisher port

Every client failure leaves this package as BrokerUnavailable (common.amqp.errors); batched
publishing with a confirm per message is private to it (common.amqp._confirms).
"""

from common.amqp.broker import Broker
from common.amqp.publisher import AmqpTaskPublisher
from common.amqp.signals import Signal, Signals
from common.amqp.topology import Topology

__all__ = ["AmqpTaskPublisher", "Broker", "Signal", "Signals", "Topology"]
