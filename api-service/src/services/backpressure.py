"""Backpressure: new submissions are refused (a 503 problem with Retry-After) while the work
that waits is past MAX_BACKLOG, instead of the backlog growing without bound.

What waits is the larger of the outbox backlog (due tasks whose message is not yet
confirmed: one index-only read) and the work queue's ready messages (a passive declare),
measured by a loop every DISPATCH_INTERVAL_SECONDS, never by a request: a submission only
reads the last measure. A measure that fails keeps the last one (a database that does not
answer fails the submission anyway; a broker that does not leaves the outbox to take it).

The loop runs with MAX_BACKLOG 0 (no bound) too: `GET /api/queue` shows its latest figures,
each as it was last measured (None where that measure failed).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from common.errors import DependencyUnavailable, TooMuchWaiting
from common.supervision import run_forever

logger = logging.getLogger(__name__)


Measure = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """The latest measure: each figure None before it was first measured and while its last
    measure failed; `measured_at` None before the first measure."""

    outbox_backlog: int | None = None  # due tasks whose message is not yet confirmed
    queue_ready: int | None = None  # the work queue's ready messages
    measured_at: datetime | None = None


class Backpressure:
    def __init__(
        self, limit: int, *, outbox: Measure | None = None, queue: Measure | None = None
    ) -> None:
        self.limit = limit  # 0: no bound
        self._outbox = outbox
        self._queue = queue
        self.waiting = 0  # as last measured
        self.figures = QueueFigures()

    @property
    def over(self) -> bool:
        return 0 < self.limit < self.waiting

    def check(self) -> None:
        """TooMuchWaiting while over the bound, as last measured."""
        if self.over:
            raise TooMuchWaiting(self.waiting, self.limit)

    async def measure(self) -> None:
        outbox, queue = await _taken(self._outbox), await _taken(self._queue)
        self.figures = QueueFigures(outbox, queue, datetime.now(UTC))
        waiting = [figure for figure in (outbox, queue) if figure is not None]
        if waiting:
            was_over, self.waiting = self.over, max(waiting)
            if self.over != was_over:
                logger.warning(
                    "submissions refused: too much waits"
                    if self.over
                    else "submissions taken again",
                    extra={"waiting": self.waiting, "max_backlog": self.limit},
                )

    async def watch(self, *, interval_seconds: float) -> NoReturn:
        async def once() -> float:
            await self.measure()
            return interval_seconds

        await run_forever(once, name="backpressure", max_backoff_seconds=interval_seconds)


async def _taken(measure: Measure | None) -> int | None:
    if measure is None:
        return None
    try:
        return await measure()
    except DependencyUnavailable as exc:
        logger.debug("backlog not measured", extra={"error": str(exc)})
        return None


NONE = Backpressure(0)  # nothing measured: never over
