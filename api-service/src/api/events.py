"""`/api/events`: one stream of every transition of the caller's tenant, for a dashboard that
shows many tasks at once (a stream per task would use up a browser's six connections to
one origin). Its slots are the per-task streams' (api.routes), so both count against
MAX_STREAMS_PER_TENANT."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from api.auth import caller_of
from api.deps import last_event_id
from api.docs import EVENTS_RESPONSE, LAST_EVENT_ID_PARAMETER
from api.lean_route import LeanRoute
from api.metrics import ApiMetrics
from api.openapi import problem_responses
from api.routes import StreamSlots, held_stream
from common.settings import Settings
from services.backends import Backends
from services.events import tenant_event_stream


def event_routes(
    backends: Backends,
    settings: Settings,
    streams: StreamSlots,
    metrics: ApiMetrics | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/api/events", tags=["tasks"], route_class=LeanRoute)

    @router.get(
        "",
        summary="Follow every task of yours live (Server-Sent Events)",
        responses={200: EVENTS_RESPONSE, **problem_responses(400, 429, 500, 503)},
        openapi_extra={"parameters": [LAST_EVENT_ID_PARAMETER]},
    )
    async def tenant_events(request: Request) -> Response:
        """A `text/event-stream` of every transition of every task of yours, in event id
        order, as the per-task stream sends them: from now on (no history), or with
        `Last-Event-ID` every event after that one first, with no gap or repeat. Events come
        in batches, at most one read per 250 ms however busy the service is, so an event
        may arrive up to that late (up to a second more while an earlier transition is still
        committing); a `: keep-alive` comment every EVENTS_HEARTBEAT_SECONDS while there are
        none. Each read is one range of all tenants' events: its cost follows the whole
        service's traffic. A stopping API process ends its streams: clients reconnect."""
        after = last_event_id(request)
        tenant = caller_of(request).owner
        stream = tenant_event_stream(
            repository=backends.repository,
            hub=backends.events,
            tenant=tenant,
            last_event_id=after,
            heartbeat_seconds=settings.events_heartbeat_seconds,
        )
        return held_stream(stream, tenant, streams, settings, metrics, context={"tenant": tenant})

    return router
