"""The dashboard's figures: `GET /api/tasks/throughput` (the caller's tasks submitted and
completed by minute) and `GET /api/queue` (what waits, system-wide).

Include `figure_routes` before `task_routes`: `/api/tasks/throughput` must be matched before
`/api/tasks/{task_id}` would take "throughput" for a task id.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request, Response

from api.auth import caller_of
from api.deps import throughput_query
from api.docs import THROUGHPUT_PARAMETERS
from api.lean_route import LeanRoute
from api.openapi import problem_responses
from models.figures import QueuePublic, ThroughputPublic
from services.backends import Backends
from services.backpressure import QueueFigures
from services.tasks import task_throughput


def _queue_document(figures: QueueFigures) -> bytes:
    measured_at = figures.measured_at
    return orjson.dumps(
        {
            "outbox_backlog": figures.outbox_backlog,
            "queue_ready": figures.queue_ready,
            "measured_at": None if measured_at is None else measured_at.isoformat(),
        }
    )


def figure_routes(backends: Backends) -> APIRouter:
    router = APIRouter(route_class=LeanRoute)
    repository, pressure = backends.repository, backends.pressure

    @router.get(
        "/api/tasks/throughput",
        tags=["tasks"],
        response_model=ThroughputPublic,
        summary="How many tasks were submitted and completed in each recent minute",
        responses=problem_responses(400, 500, 503),
        openapi_extra={"parameters": THROUGHPUT_PARAMETERS},
    )
    async def throughput(request: Request) -> Response:
        """The caller's tasks submitted, and completed (COMPLETED: not FAILED or CANCELLED),
        in each of the last `minutes` UTC minutes: oldest first, 0 included, the current
        (unfinished) minute last. Counted by the transitions as they commit; kept a day."""
        minutes = await task_throughput(
            repository=repository,
            tenant=caller_of(request).owner,
            minutes=throughput_query(request).minutes,
        )
        return Response(
            orjson.dumps(ThroughputPublic.dict_of(minutes)), media_type="application/json"
        )

    @router.get(
        "/api/queue",
        tags=["queue"],
        response_model=QueuePublic,
        summary="What waits: the outbox backlog and the work queue's ready messages",
        responses=problem_responses(500),
    )
    async def queue(request: Request) -> Response:
        """The whole system's figures, every tenant's tasks together (not only the caller's),
        as this API process last measured them (every DISPATCH_INTERVAL_SECONDS): the due
        tasks whose message the broker has not confirmed yet, and the work queue's ready
        messages. A figure is null before its first measure and while its last one failed;
        no request asks a backend."""
        return Response(_queue_document(pressure.figures), media_type="application/json")

    return router
