"""Broadcasts between the processes, beside the work queue: which tasks changed, and which to
stop.

    CHANGED  every transition's task id; each API process listens, for its event streams
    CANCEL   a task cancelled while PROCESSING; each worker listens, and the holder stops it

Each signal is a fanout exchange; each listening process binds a queue of its own to it
(exclusive, deleted with its connection) and takes messages without acks. An API process
binds its CHANGED queue only while it has event streams open: the rest of the time it does
not pay for every transition of every task. A signal carries
only task ids: what happened is in MySQL (task_events), so a lost signal loses no data, and
a listener that was away catches up from the table when it listens again (`on_listening`).
Sending never waits: ids sent in one turn of the event loop go out in one message, and
those sent while the broker is away go out once it is back (up to a bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson
from aio_pika import ExchangeType, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from common.amqp.errors import translated
from common.errors import BrokerUnavailable

logger = logging.getLogger(__name__)

_MAX_PENDING = 10_000


class Signal(enum.Enum):
    CHANGED = "changes"
    CANCEL = "cancels"


OnSignal = Callable[[list[str]], None]


@dataclass(slots=True)
class _Listener:
    on_signal: OnSignal
    on_listening: Callable[[], None] | None
    wanted: bool  # whether its queue should be bound now
    queue: AbstractQueue | None = None  # this session's
    bound: bool = False


def exchange_name(work_queue: str, signal: Signal) -> str:
    return f"{work_queue}.{signal.value}"


class Signals:
    def __init__(self, work_queue: str, *, timeout: float) -> None:
        self._work_queue = work_queue
        self._timeout = timeout
        self._listeners: dict[Signal, _Listener] = {}
        self._exchanges: dict[Signal, AbstractExchange] = {}
        self._channel: AbstractChannel | None = None
        self._pending: dict[Signal, dict[str, None]] = {signal: {} for signal in Signal}
        self._flushing: asyncio.Task[None] | None = None
        self._binding: asyncio.Task[None] | None = None

    def listen(
        self,
        signal: Signal,
        on_signal: OnSignal,
        *,
        on_listening: Callable[[], None] | None = None,
        on_demand: bool = False,
    ) -> None:
        """Hand each message of `signal` to `on_signal` (the task ids), on every session from
        the next one on; `on_listening` is called each time the queue is bound again, when
        whatever was sent meanwhile is lost (call before the broker starts). `on_demand`:
        bound only while `want(signal, True)` says so, so that a process with nobody to tell
        does not take every broadcast."""
        self._listeners[signal] = _Listener(on_signal, on_listening, wanted=not on_demand)

    def want(self, signal: Signal, wanted: bool) -> None:
        """Bind (True) or unbind (False) an on-demand listener's queue, soon; never raises."""
        self._listeners[signal].wanted = wanted
        if self._binding is None or self._binding.done():
            self._binding = asyncio.get_running_loop().create_task(self._rebind())

    def send(self, signal: Signal, task_ids: Sequence[str]) -> None:
        """Broadcast the ids soon; never raises, never waits."""
        pending = self._pending[signal]
        for task_id in task_ids:
            pending[task_id] = None
        while len(pending) > _MAX_PENDING:  # the broker has been away a long time
            del pending[next(iter(pending))]
        self._schedule_flush()

    async def attach(self, channel: AbstractChannel) -> None:
        """Declare the exchanges on `channel` (no publisher confirms), bind this process's
        queues, and send what waited for a connection."""
        exchanges: dict[Signal, AbstractExchange] = {}
        for signal in Signal:
            exchanges[signal] = await channel.declare_exchange(
                exchange_name(self._work_queue, signal), ExchangeType.FANOUT, durable=True
            )
        self._channel, self._exchanges = channel, exchanges
        for listener in self._listeners.values():
            listener.queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            listener.bound = False
            await listener.queue.consume(self._receiver(listener), no_ack=True)
        await self._bind_as_wanted()
        self._schedule_flush()

    async def _bind_as_wanted(self) -> None:
        """Until each queue is bound as its listener wants (it may change meanwhile)."""
        while True:
            moves = [(sig, lis) for sig, lis in self._listeners.items() if lis.wanted != lis.bound]
            if not moves:
                return
            for signal, listener in moves:
                queue = listener.queue
                if queue is None:
                    return  # no session yet: attach binds
                if listener.wanted:
                    await queue.bind(self._exchanges[signal])
                    listener.bound = True
                    if listener.on_listening is not None:
                        listener.on_listening()
                else:
                    await queue.unbind(self._exchanges[signal])
                    listener.bound = False

    async def _rebind(self) -> None:
        try:
            with translated("binding a signal queue", timeout=self._timeout):
                async with asyncio.timeout(self._timeout):
                    await self._bind_as_wanted()
        except BrokerUnavailable as exc:  # the session is going: the next attach binds
            logger.warning("signal queue not bound", extra={"error": str(exc)})

    def _receiver(
        self, listener: _Listener
    ) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def receive(message: AbstractIncomingMessage) -> None:
            try:
                task_ids = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                logger.warning("signal ignored", extra={"reason": "body is not JSON"})
                return
            if isinstance(task_ids, list):
                listener.on_signal([str(task_id) for task_id in task_ids])

        return receive

    def _schedule_flush(self) -> None:
        if self._flushing is None or self._flushing.done():
            with contextlib.suppress(RuntimeError):  # no running loop: sent at the next attach
                self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the rest of this turn's ids join
        while any(self._pending.values()):
            channel = self._channel
            if channel is None or channel.is_closed:
                return  # kept for the next session
            for signal, pending in self._pending.items():
                if pending and not await self._publish(signal, pending):
                    return

    async def _publish(self, signal: Signal, pending: dict[str, None]) -> bool:
        task_ids = list(pending)
        pending.clear()
        try:
            with translated("signal", timeout=self._timeout):
                async with asyncio.timeout(self._timeout):
                    await self._exchanges[signal].publish(
                        Message(orjson.dumps(task_ids), content_type="application/json"),
                        routing_key="",
                        # Nobody bound is normal (no API has a stream open): dropped, not
                        # returned to us as aio-pika's default `mandatory` would have it.
                        mandatory=False,
                    )
        except BrokerUnavailable as exc:  # the session is going: they wait for the next one
            logger.warning("signal not sent", extra={"signal": signal.name, "error": str(exc)})
            for task_id in task_ids:
                pending.setdefault(task_id, None)
            return False
        return True
