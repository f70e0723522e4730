"""A running attempt's progress, written to its task at most once per interval.

A handler may report progress as often as it likes (a loop over chunks reports every chunk);
the row and the event stream get the newest report at most once a second: the first report
at once, later ones merged until the interval since the last write has passed. Writes run in
the background, one at a time, so reporting never blocks the handler; a write that fails
(the database is down) is logged and dropped, since the next one carries the newer figure.
"""

from __future__ import annotations

import asyncio
import logging

from common.errors import DependencyUnavailable
from common.ports import TaskRepository

logger = logging.getLogger(__name__)


class ProgressWriter:
    def __init__(
        self, repository: TaskRepository, task_id: str, attempt: int, *, interval: float = 1.0
    ) -> None:
        self._repository = repository
        self._task_id = task_id
        self._attempt = attempt
        self._interval = interval
        self._pending: tuple[float, str | None] | None = None
        self._last_write = -interval  # on the loop's clock
        self._writer: asyncio.Task[None] | None = None
        self._writing = False

    def report(self, fraction: float, note: str | None) -> None:
        self._pending = (fraction, note)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())

    async def _write_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending is not None:
            wait = self._last_write + self._interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # later reports replace the pending one meanwhile
                continue  # and close() may have dropped it
            (fraction, note), self._pending = self._pending, None
            self._last_write = loop.time()
            self._writing = True
            try:
                await self._repository.report_progress(
                    self._task_id, attempt=self._attempt, progress=fraction, note=note
                )
            except DependencyUnavailable as exc:
                logger.warning(
                    "progress not written", extra={"task_id": self._task_id, "error": str(exc)}
                )
            except Exception:
                logger.exception("progress not written", extra={"task_id": self._task_id})
            finally:
                self._writing = False

    async def close(self) -> None:
        """Drop what is not written yet and wait for a write in progress, so that nothing is
        written after the attempt's own end."""
        self._pending = None
        writer, self._writer = self._writer, None
        if writer is None or writer.done():
            return
        if not self._writing:
            writer.cancel()  # only waiting out the interval
        await asyncio.wait({writer})
