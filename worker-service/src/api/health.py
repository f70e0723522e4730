"""GET /health/live and /health/ready on the worker's port, answered as the API answers its own.

Live: the worker's event loop runs (it serves this port). Ready: the work queue delivers to it
and the database answers (services.health); otherwise a 503 problem naming what it lacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from api.app import Answer, ASGIApp, json_endpoint, problem_body
from services.health import not_ready

UNAVAILABLE_PROBLEM = "/problems/service-unavailable"

Readiness = Callable[[], Awaitable[dict[str, str]]]


def health_routes(*, readiness: Readiness) -> dict[str, ASGIApp]:
    """The two routes, for api.app.RouteTable; `readiness` checks each part (services.health)."""

    async def live() -> Answer:
        return 200, {"status": "ok"}

    async def ready() -> Answer:
        checks = await readiness()
        detail = not_ready(checks)
        if detail is not None:
            return 503, problem_body(503, detail, type_=UNAVAILABLE_PROBLEM, checks=checks)
        return 200, {"status": "ok", "checks": checks}

    return {"/health/live": json_endpoint(live), "/health/ready": json_endpoint(ready)}
