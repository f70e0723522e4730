"""Live task status as Server-Sent Events, without polling the database per client.

Every transition is a row of task_events, and its task id is broadcast to every API process
(common.amqp.signals, CHANGED). The `EventHub` of a process wakes the streams of that task,
and each woken stream reads the task's events after the last one it sent, from the table.
The table decides what a client sees, so nothing is sent twice or skipped: a task's events
are written under its row lock, so their ids grow in commit order. A broadcast lost while
this process was not listening is made up for when it listens again (`wake_all`).

A tenant's stream (`tenant_event_stream`) follows every task of the tenant. It is woken by
every broadcast, so it reads at most once per `_COALESCE_SECONDS` and sends what it found in
one write. Across tasks, ids are not in commit order: a transition may take id 41 and commit
after id 42's. So it reads every tenant's rows in id order and stops at a hole in the ids
until the hole fills or the row after it is `_HOLE_GRACE_SECONDS` old, by when the hole is
taken for what it almost always is, an id no event will ever have (a rolled-back transition,
or ids InnoDB reserved for a multi-row INSERT ... SELECT and did not use). The events a
tenant's stream sends are then in id order, and a Last-Event-ID resumes it exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

from common.ports import TaskRepository
from common.tasks import EventRow, TaskEvent
from models.tasks import TaskEventPublic

_BATCH = 100
# How long a browser's EventSource waits before it reconnects (it sends Last-Event-ID).
_RECONNECT_MS = 2000
# A tenant's stream: rows of task_events per read (every tenant's), the least time between
# two reads however many broadcasts wake it, and how long a hole in the ids holds it back.
_TENANT_BATCH = 500
_COALESCE_SECONDS = 0.25
_HOLE_GRACE_SECONDS = 1.0


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
        self._everything: set[asyncio.Event] = set()  # the tenants' streams
        self._closing = False
        self._demand = demand
        self._open = 0
        self._release: asyncio.TimerHandle | None = None
        self._linger = linger_seconds

    @property
    def open_streams(self) -> int:
        per_task = sum(len(watchers) for watchers in self._watchers.values())
        return per_task + len(self._everything)

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

    @contextlib.contextmanager
    def watching_all(self) -> Iterator[asyncio.Event]:
        """An event set whenever any task may have a new row in task_events."""
        woken = asyncio.Event()
        self._everything.add(woken)
        self._opened()
        try:
            yield woken
        finally:
            self._everything.discard(woken)
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
        for woken in self._everything:  # once per broadcast, however many ids it names
            woken.set()
        for task_id in task_ids:
            for woken in self._watchers.get(task_id, ()):
                woken.set()

    def wake_all(self) -> None:
        for woken in self._everything:
            woken.set()
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


def settled_events(
    rows: Sequence[EventRow], last: int, *, grace_seconds: float
) -> tuple[list[TaskEvent], int, float | None]:
    """What a tenant's stream may send of `rows` (every row after id `last`, in id order):
    its events up to the first hole in the ids that is younger than `grace_seconds`, the id
    it has then settled up to, and how long until that hole's grace ends (None: no hole)."""
    events: list[TaskEvent] = []
    for row in rows:
        if row.event_id > last + 1 and row.age_seconds < grace_seconds:
            return events, last, grace_seconds - row.age_seconds
        if row.event is not None:
            events.append(row.event)
        last = row.event_id
    return events, last, None


async def tenant_event_stream(
    *,
    repository: TaskRepository,
    hub: EventHub,
    tenant: str,
    last_event_id: int | None,
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    """The stream's bytes: every event of the tenant's tasks after `last_event_id` (without
    one, after the newest event there is now), in id order, in one write per read; a comment
    after `heartbeat_seconds` without any. It ends only when the hub closes or the client
    goes. A read is one primary key range of task_events with every tenant's rows in it."""
    if hub.closing():
        return
    loop = asyncio.get_running_loop()
    with hub.watching_all() as woken:  # before the first read: no change slips between
        last = await repository.newest_event_id() if last_event_id is None else last_event_id
        yield b"retry: %d\n\n" % _RECONNECT_MS  # once it arrives, "now" is fixed
        sent_at = loop.time()
        while not hub.closing():
            woken.clear()  # before the read: a change committed during it wakes the next one
            read_at = loop.time()
            rows = await repository.tenant_events_after(tenant, last, limit=_TENANT_BATCH)
            events, last, hold = settled_events(rows, last, grace_seconds=_HOLE_GRACE_SECONDS)
            if events:
                yield b"".join(_frame(event) for event in events)
                sent_at = loop.time()
            if len(rows) == _TENANT_BATCH and hold is None:
                continue  # more behind this batch: read on
            # However many broadcasts came meanwhile, the next read is one read.
            await asyncio.sleep(read_at + _COALESCE_SECONDS - loop.time())
            # No broadcast also re-reads after a heartbeat: a lost one costs only latency.
            quiet = sent_at + heartbeat_seconds - loop.time()
            await _woken_within(woken, quiet if hold is None else min(quiet, hold))
            if hub.closing():
                return
            if loop.time() - sent_at >= heartbeat_seconds:
                yield b": keep-alive\n\n"
                sent_at = loop.time()


async def _woken_within(woken: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await woken.wait()
