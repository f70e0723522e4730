"""HTTP in, use case calls, HTTP out. Nothing else happens here.

The routers are built around the app's `Backends` (`task_routes(backends)`), so each endpoint
reaches its collaborators through one typed object, the fakes in tests included.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import task_create_body
from api.lean_route import LeanRoute
from api.openapi import problem_responses
from api.problems import UNAVAILABLE_PROBLEM, problem
from common.tasks import TaskRecord
from models.health import Health
from models.tasks import TaskAccepted, TaskPublic
from services.backends import Backends
from services.health import check_health
from services.tasks import get_task, retry_task, submit_task

ACCEPTED_HEADERS: dict[str, Any] = {
    "headers": {"Location": {"description": "Where to poll the task", "schema": {"type": "string"}}}
}
# The route reads its body itself (see api.deps), so the document names it here.
TASK_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskCreate"}}},
        "required": True,
    }
}

HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Health, "description": "Both components answer."},
    503: {
        "description": "At least one component is unavailable; `checks` names it.",
        "content": {
            "application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"},
                "example": {
                    "type": UNAVAILABLE_PROBLEM,
                    "title": "Service Unavailable",
                    "status": 503,
                    "detail": "unavailable: broker",
                    "checks": {"database": "ok", "broker": "unavailable"},
                },
            }
        },
    },
}


def _accepted(record: TaskRecord, what: str) -> Response:
    """The 202 of TaskAccepted's shape, serialised directly."""
    location = f"/api/tasks/{record.task_id}"
    body = {
        "task_id": record.task_id,
        "status": record.status,
        "message": f"{what}; poll {location}",
    }
    return Response(
        orjson.dumps(body),
        status_code=202,
        media_type="application/json",
        headers={"Location": location},
    )


def task_routes(backends: Backends) -> APIRouter:
    """`/api/tasks`: every endpoint takes the Request (and path parameters) and returns a
    Response (api.lean_route)."""
    router = APIRouter(prefix="/api/tasks", tags=["tasks"], route_class=LeanRoute)
    repository, publisher = backends.repository, backends.publisher

    @router.post(
        "",
        status_code=202,
        response_model=TaskAccepted,
        summary="Submit a task",
        response_description="Stored as PENDING and queued; poll the Location header's URL.",
        responses={202: ACCEPTED_HEADERS, **problem_responses(400, 413, 415, 500, 503)},
        openapi_extra=TASK_CREATE_BODY,
    )
    async def create_task(request: Request) -> Response:
        """Store the task and queue it for a worker.

        Answers 202 once the task is committed in MySQL. Its message is normally confirmed by
        RabbitMQ before the answer; if the broker is down, the dispatcher sends it when it is back.
        """
        body = await task_create_body(request)
        record = await submit_task(
            repository=repository,
            publisher=publisher,
            title=body.title,
            description=body.description,
            metadata=body.metadata,
        )
        return _accepted(record, "Task accepted")

    @router.get(
        "/{task_id}",
        response_model=TaskPublic,
        summary="Get a task's status and details",
        responses=problem_responses(404, 500, 503),
    )
    async def read_task(task_id: str, request: Request) -> Response:
        record = await get_task(repository=repository, task_id=task_id)
        return Response(TaskPublic.json_of(record), media_type="application/json")

    @router.post(
        "/{task_id}/retry",
        status_code=202,
        response_model=TaskAccepted,
        summary="Re-drive a FAILED task",
        response_description="PENDING again with a fresh attempt budget, and queued.",
        responses={202: ACCEPTED_HEADERS, **problem_responses(404, 409, 500, 503)},
    )
    async def retry_failed_task(task_id: str, request: Request) -> Response:
        """Put a FAILED task back to PENDING (attempts start again from zero) and queue it."""
        record = await retry_task(repository=repository, publisher=publisher, task_id=task_id)
        return _accepted(record, "Task queued again")

    return router


def health_routes(backends: Backends) -> APIRouter:
    router = APIRouter(tags=["health"], route_class=LeanRoute)

    @router.get(
        "/health",
        summary="Whether the database and the broker answer",
        responses=HEALTH_RESPONSES,
    )
    async def health(request: Request) -> Response:
        checks = await check_health(repository=backends.repository, publisher=backends.publisher)
        failing = [name for name, state in checks.items() if state != "ok"]
        if failing:
            return problem(
                503, "unavailable: " + ", ".join(failing), type_=UNAVAILABLE_PROBLEM, checks=checks
            )
        return JSONResponse(Health(status="ok", checks=checks).model_dump())

    return router
