"""Every failure of the AMQP client, translated into ours at the adapter's boundary.

Whatever aio-pika, aiormq or pamqp raise (a refused, closed or reset connection, a closed
channel, a nack, a return, a handshake cut short, no answer in time) leaves this package as
BrokerUnavailable. No caller ever sees one of their exceptions.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Literal

from common.errors import BrokerUnavailable, TaskServiceError


class translated:  # noqa: N801 - used as a `with` statement, like contextlib's helpers
    """`with translated("publish", timeout=...)`: our own errors pass through; any other
    Exception becomes BrokerUnavailable, naming what was being done, with the client's
    exception as its cause. A class rather than a generator: it is on every publish."""

    __slots__ = ("_timeout", "_what")

    def __init__(self, what: str, *, timeout: float | None = None) -> None:
        self._what = what
        self._timeout = timeout

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _: TracebackType | None
    ) -> Literal[False]:
        if exc is None or isinstance(exc, TaskServiceError):
            return False
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is None or task.cancelling():
                return False  # this task is being cancelled: let it stop
            # A future of the client's, cancelled as its channel or connection closed.
            raise BrokerUnavailable(
                f"RabbitMQ: {self._what}: cancelled as the connection closed"
            ) from None
        if isinstance(exc, TimeoutError):
            within = f" within {self._timeout:g} s" if self._timeout is not None else ""
            raise BrokerUnavailable(f"RabbitMQ: {self._what}: no answer{within}") from exc
        if isinstance(exc, Exception):
            raise BrokerUnavailable(f"RabbitMQ: {self._what}: {exc!r}") from exc
        return False
