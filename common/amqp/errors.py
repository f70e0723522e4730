"""Every failure of the AMQP client, translated into ours at the adapter's boundary.

Whatever aio-pika, aiormq or pamqp raise (a refused, closed or reset connection, a closed
channel, a nack, a return, a handshake cut short, no answer in time) leaves this package as
BrokerUnavailable. No caller ever sees one of their exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from common.errors import BrokerUnavailable, TaskServiceError


@contextlib.contextmanager
def translated(what: str, *, timeout: float | None = None) -> Iterator[None]:
    """Our own errors pass through; any other Exception becomes BrokerUnavailable, naming
    `what` was being done, with the client's exception as its cause."""
    try:
        yield
    except TaskServiceError:
        raise
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise  # this task is being cancelled: let it stop
        # A future of the client's, cancelled as its channel or connection closed.
        raise BrokerUnavailable(f"RabbitMQ: {what}: cancelled as the connection closed") from None
    except TimeoutError as exc:
        within = f" within {timeout:g} s" if timeout is not None else ""
        raise BrokerUnavailable(f"RabbitMQ: {what}: no answer{within}") from exc
    except Exception as exc:
        raise BrokerUnavailable(f"RabbitMQ: {what}: {exc!r}") from exc
