"""The simulated work: a random pause that never blocks the event loop, failing on request."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from common.messages import TaskMessage

Work = Callable[[TaskMessage], Awaitable[None]]


class SimulatedFailure(Exception):
    """Raised by the simulated work for a share PROCESSING_FAILURE_RATE of attempts."""


def simulated_work(min_seconds: float, max_seconds: float, failure_rate: float = 0.0) -> Work:
    async def work(message: TaskMessage) -> None:
        await asyncio.sleep(random.uniform(min_seconds, max_seconds))
        # Decided by chance alone: nothing in a task's payload can make it fail.
        if failure_rate and random.random() < failure_rate:
            raise SimulatedFailure("simulated failure (PROCESSING_FAILURE_RATE)")

    return work
