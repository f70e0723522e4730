"""Whether the API's backing services answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from common.errors import DependencyUnavailable
from common.ports import TaskPublisher, TaskRepository


async def check_health(*, repository: TaskRepository, publisher: TaskPublisher) -> dict[str, str]:
    """One entry per component: "ok" or "unavailable". Both are asked at once, so the answer
    takes at most the longer of their timeouts."""
    database, broker = await asyncio.gather(_state(repository.ping), _state(publisher.ping))
    return {"database": database, "broker": broker}


async def _state(ping: Callable[[], Awaitable[None]]) -> str:
    try:
        await ping()
    except DependencyUnavailable:
        return "unavailable"
    return "ok"
