"""Whether the API's backing services answer."""

from __future__ import annotations

from common.errors import DependencyUnavailable
from common.ports import TaskPublisher, TaskRepository


async def check_health(*, repository: TaskRepository, publisher: TaskPublisher) -> dict[str, str]:
    """One entry per component: "ok" or what is wrong with it."""
    checks: dict[str, str] = {}
    try:
        await repository.ping()
        checks["database"] = "ok"
    except DependencyUnavailable:
        checks["database"] = "unavailable"
    checks["broker"] = "ok" if publisher.is_open else "unavailable"
    return checks
