"""The simulated work: a random pause that never blocks the event loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from common.messages import TaskMessage

Work = Callable[[TaskMessage], Awaitable[None]]


def simulated_work(min_seconds: float, max_seconds: float) -> Work:
    async def work(message: TaskMessage) -> None:
        await asyncio.sleep(random.uniform(min_seconds, max_seconds))

    return work
