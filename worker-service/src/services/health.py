"""Whether this worker is ready: what GET /health/ready on its health port answers.

Liveness needs no use case: a worker whose health port answers GET /health/live is alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from common.errors import DependencyUnavailable
from common.ports import TaskPublisher, TaskRepository

OK = "ok"
UNAVAILABLE = "unavailable"


async def check_readiness(
    *, consuming: Callable[[], bool], repository: TaskRepository, publisher: TaskPublisher
) -> dict[str, str]:
    """`consumer`: the work queue delivers to this worker, on a connection whose broker
    answers a ping within PUBLISH_TIMEOUT_SECONDS (one that does not is dropped, so a broker
    gone silent is noticed now, not at the connection's next heartbeat); `database`: it answers
    a ping within DATABASE_TIMEOUT_SECONDS. Each "ok" or "unavailable"; both asked at once."""
    database, broker = await asyncio.gather(_state(repository.ping), _state(publisher.ping))
    # Read after the pings, so that a consumer lost meanwhile is not reported as held.
    consumer = OK if broker == OK and consuming() else UNAVAILABLE
    return {"consumer": consumer, "database": database}


def not_ready(checks: dict[str, str]) -> str | None:
    """The problem's detail naming each part that is not "ok"; None when every part is."""
    failing = [f"{name} {state}" for name, state in checks.items() if state != OK]
    return "not ready: " + ", ".join(failing) if failing else None


async def _state(ping: Callable[[], Awaitable[None]]) -> str:
    try:
        await ping()
    except DependencyUnavailable:
        return UNAVAILABLE
    return OK
