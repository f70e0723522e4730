"""Whether the API is ready to serve: what GET /health/ready (and its alias /health) answers.

Liveness needs no use case: a process that answers GET /health/live is alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from common.errors import DependencyUnavailable, SchemaOutdated
from common.ports import TaskPublisher, TaskRepository

OK = "ok"


async def check_readiness(
    *,
    repository: TaskRepository,
    publisher: TaskPublisher,
    require_schema: Callable[[], Awaitable[None]],
) -> dict[str, str]:
    """One entry per part: `database` and `broker` ("ok" or "unavailable") and `schema` ("ok",
    "outdated", or "unknown" while the database does not answer). All three are asked at once,
    so the answer takes at most the longest of their timeouts."""
    database, broker, schema = await asyncio.gather(
        _state(repository.ping), _state(publisher.ping), _schema_state(require_schema)
    )
    return {"database": database, "broker": broker, "schema": schema}


def not_ready(checks: dict[str, str]) -> str | None:
    """The problem's detail naming each part that is not "ok"; None when every part is."""
    failing = [f"{name} {state}" for name, state in checks.items() if state != OK]
    return "not ready: " + ", ".join(failing) if failing else None


async def _state(ping: Callable[[], Awaitable[None]]) -> str:
    try:
        await ping()
    except DependencyUnavailable:
        return "unavailable"
    return OK


async def _schema_state(require_schema: Callable[[], Awaitable[None]]) -> str:
    try:
        await require_schema()
    except SchemaOutdated:
        return "outdated"
    except DependencyUnavailable:
        return "unknown"
    return OK
