"""`/health/live`, `/health/ready` and `/health` (the old name of ready, kept for its clients).

Live is for a supervisor that restarts what hangs: the process answers, and nothing else is
asked. Ready is for whoever routes traffic here: the database and the broker answer and the
schema is at the revision this code needs (common.mysql.revision).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from api.lean_route import LeanRoute
from api.problems import UNAVAILABLE_PROBLEM, problem
from models.health import Health, Liveness
from services.backends import Backends
from services.health import check_readiness, not_ready

LIVE_BODY = orjson.dumps({"status": "ok"})

READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Health,
        "description": "The database and the broker answer; the schema is the expected one.",
    },
    503: {
        "description": "At least one part is not ready; `checks` says how each one is:"
        " `database` and `broker` `ok` or `unavailable`, `schema` `ok`, `outdated` (run"
        " `make migrate`) or `unknown` (the database does not answer).",
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": {
                    "type": UNAVAILABLE_PROBLEM,
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "not ready: broker unavailable",
                    "checks": {"database": "ok", "broker": "unavailable", "schema": "ok"},
                },
            }
        },
    },
}


def health_routes(backends: Backends) -> APIRouter:
    router = APIRouter(tags=["health"], route_class=LeanRoute)

    async def readiness() -> Response:
        checks = await check_readiness(
            repository=backends.repository,
            publisher=backends.publisher,
            require_schema=backends.require_schema,
        )
        detail = not_ready(checks)
        if detail is not None:
            return problem(503, detail, type_=UNAVAILABLE_PROBLEM, checks=checks)
        return Response(
            orjson.dumps({"status": "ok", "checks": checks}), media_type="application/json"
        )

    @router.get(
        "/health/live",
        response_model=Liveness,
        summary="Whether the process answers (asks no backend)",
        response_description="Always, while the process serves requests.",
    )
    async def live(request: Request) -> Response:
        """For a liveness probe or the container's HEALTHCHECK: a failure here is one a
        restart may cure. An unavailable database or broker is not: the API answers (503 or,
        through the outbox, 202) and recovers by itself once they are back."""
        return Response(LIVE_BODY, media_type="application/json")

    @router.get(
        "/health/ready",
        summary="Whether the database and the broker answer and the schema is current",
        responses=READY_RESPONSES,
    )
    async def ready(request: Request) -> Response:
        """For a readiness probe or a load balancer. The three parts are asked at once, each
        within its timeout (DATABASE_TIMEOUT_SECONDS, PUBLISH_TIMEOUT_SECONDS)."""
        return await readiness()

    @router.get(
        "/health",
        summary="The same as /health/ready (its earlier name)",
        responses=READY_RESPONSES,
    )
    async def health(request: Request) -> Response:
        return await readiness()

    return router
