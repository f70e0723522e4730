"""Group commit: many concurrent callers, one statement (or one write to the broker).

A caller's item goes out at once if nothing is being written; whatever arrives while a
batch is being written goes out together in the next one. There is no timer, so the added
latency is at most one batch's round trip, and under load batches grow by themselves.

Used inside the adapters only (common.mysql, common.amqp). With a `timeout`, no caller waits
longer than that for its result, however long the batch ahead of its own takes: a batch must
be written by the time its oldest item has waited `timeout` (one timer a batch, not one a
caller), and its callers get `expired()` otherwise. An item given up on before its batch was
taken is never written.

The writer is a task of its own context, not of the caller's that started it: it serves every
caller, so neither its log records nor its spans are that caller's. With tracing on, a
batch's write is a child of its first caller's span (common.tracing.parent).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from common import tracing
from common.errors import DependencyUnavailable

if TYPE_CHECKING:
    from opentelemetry.context import Context

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """`await batcher.submit(item)` returns that item's result from `write(batch)`, which
    gets up to `max_batch` items and returns one result per item, in order.

    A batch whose write raises one of `split_on` (an error that one item can cause, such as
    a row the database refuses) is written again item by item, so that only the callers
    whose own item fails get the error."""

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int,
        split_on: tuple[type[Exception], ...] = (),
        timeout: float | None = None,
        expired: Callable[[], Exception] = TimeoutError,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._split_on = split_on
        self._timeout = timeout
        self._expired = expired
        self._pending: list[_Entry[Item, Result]] = []
        self._writing = False
        self._tasks: set[asyncio.Task[None]] = set()  # strong references: see create_task

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._pending.append((item, future, loop.time(), tracing.parent()))
        if not self._writing:
            self._writing = True
            task = loop.create_task(self._drain(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            return await future
        except asyncio.CancelledError:
            self._forget(future)  # given up on (a deadline, a client gone): never write it
            raise

    def _forget(self, future: asyncio.Future[Result]) -> None:
        for index, (_, waiting, _, _) in enumerate(self._pending):
            if waiting is future:
                del self._pending[index]
                return

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                batch = self._without_expired(batch)
                if batch:
                    parent = tracing.attach(batch[0][3])
                    try:
                        await self._write_batch(batch)
                    finally:
                        tracing.detach(parent)
        finally:
            self._writing = False

    def _without_expired(self, batch: list[_Entry[Item, Result]]) -> list[_Entry[Item, Result]]:
        """Fails the callers whose time ran out while they waited, and leaves their items
        unwritten: each of those callers has been told it failed."""
        if self._timeout is None:
            return batch
        cutoff = asyncio.get_running_loop().time() - self._timeout
        if batch[0][2] > cutoff:  # the oldest is still in time, so are all the others
            return batch
        for _, future, queued_at, _ in batch:
            if queued_at <= cutoff and not future.done():
                future.set_exception(self._expired())
        return [entry for entry in batch if entry[2] > cutoff]

    async def _write_batch(self, batch: list[_Entry[Item, Result]]) -> None:
        try:
            results = await self._written([entry[0] for entry in batch], queued_at=batch[0][2])
            if len(results) != len(batch):
                raise RuntimeError(f"a write of {len(batch)} items gave {len(results)} results")
        except BaseException as exc:
            if len(batch) > 1 and isinstance(exc, self._split_on):
                logger.warning(
                    "batch refused, written item by item",
                    extra={"size": len(batch), "error": repr(exc)},
                )
                for entry in batch:
                    await self._write_batch([entry])
                return
            _fail_all(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future, _, _), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _written(self, items: list[Item], *, queued_at: float) -> Sequence[Result]:
        """The write, done by the time the oldest of `items` has waited `timeout`."""
        if self._timeout is None:
            return await self._write(items)
        try:
            async with asyncio.timeout_at(queued_at + self._timeout):
                return await self._write(items)
        except TimeoutError:
            raise self._expired() from None


# An item, the future its caller waits on, when it was submitted (the loop's clock) and the
# caller's trace context (None with tracing off).
_Entry = tuple[Item, "asyncio.Future[Result]", float, "Context | None"]


def _fail_all(batch: Sequence[_Entry[object, Result]], exc: BaseException) -> None:
    """Every caller in the batch gets the error (or is cancelled with the writer)."""
    for _, future, _, _ in batch:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)


class BackgroundBatcher(Generic[Item]):
    """`add(item)` returns at once; items are written in batches by a task of its own.
    For writes nobody waits for, such as the outbox mark; a failed batch is logged and the
    next one goes on. With `linger_seconds`, a batch that is not full waits that long for
    more items first."""

    def __init__(
        self,
        write: Callable[[list[Item]], Awaitable[object]],
        *,
        max_batch: int,
        name: str,
        linger_seconds: float = 0.0,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._name = name
        self._linger = linger_seconds
        self._pending: list[Item] = []
        self._writing = False
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, item: Item) -> None:
        self._pending.append(item)
        if not self._writing:
            self._writing = True
            task = asyncio.get_running_loop().create_task(
                self._drain(), context=contextvars.Context()
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._pending:
                if self._linger and len(self._pending) < self._max_batch:
                    await asyncio.sleep(self._linger)  # let more items join this statement
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._write_logged(batch)
        finally:
            self._writing = False

    async def _write_logged(self, batch: list[Item]) -> None:
        context = {"batch": self._name, "size": len(batch)}
        try:
            await self._write(batch)
        except DependencyUnavailable as exc:
            logger.warning("batch write failed", extra={**context, "error": str(exc)})
        except Exception:
            logger.exception("batch write failed unexpectedly", extra=context)

    async def flush(self) -> None:
        """Wait until everything added so far is written (or has failed)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
