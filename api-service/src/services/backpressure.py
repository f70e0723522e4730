"""Backpressure: new submissions are refused (a 503 problem with Retry-After) while the work
that waits is past MAX_BACKLOG, instead of the backlog growing without bound.

What waits is the larger of the outbox backlog (due tasks whose message is not yet
confirmed: one index-only read) and the work queue's ready messages (a passive declare),
measured by a loop every DISPATCH_INTERVAL_SECONDS, never by a request: a submission only
reads the last measure. A measure that fails keeps the last one (a database that does not
answer fails the submission anyway; a broker that does not leaves the outbox to take it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from common.errors import DependencyUnavailable, TooMuchWaiting
from common.supervision import run_forever

logger = logging.getLogger(__name__)


class Backpressure:
    def __init__(self, limit: int, measures: tuple[Callable[[], Awaitable[int]], ...]) -> None:
        self.limit = limit
        self._measures = measures
        self.waiting = 0  # as last measured

    @property
    def over(self) -> bool:
        return self.waiting > self.limit

    def check(self) -> None:
        """TooMuchWaiting while over the bound, as last measured."""
        if self.waiting > self.limit:
            raise TooMuchWaiting(self.waiting, self.limit)

    async def measure(self) -> None:
        waiting = []
        for measure in self._measures:
            try:
                waiting.append(await measure())
            except DependencyUnavailable as exc:
                logger.debug("backlog not measured", extra={"error": str(exc)})
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


NONE = Backpressure(0, ())  # nothing measured: never over
