"""Live task status as Server-Sent Events, without polling the database per client.

Every transition is a row of task_events, and its task id is broadcast to every API process
(common.amqp.signals, CHANGED). The `EventHub` of a process wakes the streams of that task,
and each woken stream reads the task's events after the last one it sent, from the table.
The table decides what a client sees, so nothing is sent twice or skipped: a task's events
are written under its row lock, so their ids grow in commit order. A broadcast lost while
this process was not listening is made up for when it listens again (`wake_all`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from common.ports import TaskRepository
from common.tasks import TaskEvent
from models.tasks import TaskEventPublic

_BATCH = 100
# How long a browser's EventSource waits before it reconnects (it sends Last-Event-ID).
_RECONNECT_MS = 2000


# After the last stream closes, the broadcasts are still taken this long, so that streams
# opened and closed one after the other do not bind and unbind the queue each time.
_LINGER_SECONDS = 30.0


class EventHub:
    """Which streams of this process watch which task. `demand(True)` is called when the
    first stream opens, `demand(False)` a while after the last one closed: while there is
    none, this process need not hear of any transition."""

    def __init__(
        self,
        demand: Callable[[bool], None] | None = None,
        *,
        linger_seconds: float = _LINGER_SECONDS,
    ) -> None:
        self._watchers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._closing = False
        self._demand = demand
        self._open = 0
        self._release: asyncio.TimerHandle | None = None
        self._linger = linger_seconds

    @property
    def open_streams(self) -> int:
        return sum(len(watchers) for watchers in self._watchers.values())

    @contextlib.contextmanager
    def watching(self, task_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the task may have a new row in task_events."""
        woken = asyncio.Event()
        self._watchers[task_id].add(woken)
        self._opened()
        try:
            yield woken
        finally:
            watchers = self._watchers[task_id]
            watchers.discard(woken)
            if not watchers:
                del self._watchers[task_id]
            self._closed()

    def _opened(self) -> None:
        self._open += 1
        if self._release is not None:
            self._release.cancel()
            self._release = None
        elif self._open == 1 and self._demand is not None:
            self._demand(True)

    def _closed(self) -> None:
        self._open -= 1
        if not self._open and self._demand is not None:
            demand = self._demand

            def release() -> None:
                self._release = None
                demand(False)

            self._release = asyncio.get_running_loop().call_later(self._linger, release)

    def changed(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            for woken in self._watchers.get(task_id, ()):
                woken.set()

    def wake_all(self) -> None:
        for watchers in self._watchers.values():
            for woken in watchers:
                woken.set()

    def close(self) -> None:
        """End every stream (the process is stopping); their clients reconnect elsewhere."""
        self._closing = True
        self.wake_all()

    def closing(self) -> bool:
        return self._closing


def _frame(event: TaskEvent) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (event.event_id, TaskEventPublic.json_of(event))


async def task_event_stream(
    *,
    repository: TaskRepository,
    hub: EventHub,
    task_id: str,
    last_event_id: int | None,
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    """The stream's bytes: the latest event (or, after `last_event_id`, every later one),
    then each new one as it is committed, a comment every `heartbeat_seconds` while nothing
    happens; it ends once a final state was sent. The task is known to exist."""
    if hub.closing():
        return
    with hub.watching(task_id) as woken:  # before the first read: no change slips between
        yield b"retry: %d\n\n" % _RECONNECT_MS
        if last_event_id is None:
            latest = await repository.latest_event(task_id)
            backlog = [] if latest is None else [latest]
        else:
            backlog = await repository.events_after(task_id, last_event_id, limit=_BATCH)
        last = last_event_id or 0
        while True:
            for event in backlog:
                yield _frame(event)
                last = event.event_id
                if event.is_final:
                    return
            if len(backlog) < _BATCH:  # caught up: wait for the next change
                try:
                    async with asyncio.timeout(heartbeat_seconds):
                        await woken.wait()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    backlog = []
                    continue
            if hub.closing():
                return
            woken.clear()
            backlog = await repository.events_after(task_id, last, limit=_BATCH)
