"""HTTP in, use case calls, HTTP out. Nothing else happens here.

The routers are built around the app's `Backends` (`task_routes(backends)`), so each endpoint
reaches its collaborators through one typed object, the fakes in tests included.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.auth import caller_of
from api.deps import (
    SubmitRules,
    idempotency_key,
    last_event_id,
    task_create_body,
    task_list_query,
)
from api.docs import (
    EVENTS_RESPONSE,
    IDEMPOTENCY_KEY_PARAMETER,
    LAST_EVENT_ID_PARAMETER,
    LIST_PARAMETERS,
    task_create_request_body,
)
from api.lean_route import LeanRoute
from api.metrics import ApiMetrics
from api.openapi import problem_responses
from api.problems import problem
from common.errors import DependencyUnavailable
from common.settings import Settings
from common.task_types import CATALOGUE
from common.tasks import IdempotencyKey, TaskQuery, TaskRecord, TaskStatus
from models.tasks import (
    TaskAccepted,
    TaskListQuery,
    TaskPage,
    TaskPublic,
    TaskStats,
    TaskTypeList,
    type_entry,
)
from services.backends import Backends
from services.cursors import InvalidCursor, decode_cursor, encode_cursor
from services.events import task_event_stream
from services.idempotency import fingerprint
from services.tasks import (
    cancel_task,
    get_task,
    list_tasks,
    retry_task,
    submit_task,
    task_counts,
)

logger = logging.getLogger(__name__)

TOO_MANY_STREAMS_PROBLEM = "/problems/too-many-streams"

ACCEPTED_HEADERS: dict[str, Any] = {
    "headers": {
        "Location": {"description": "Where to poll the task", "schema": {"type": "string"}},
        "Retry-After": {
            "description": "Seconds before the first poll is worth making (POLL_AFTER_SECONDS)",
            "schema": {"type": "integer"},
        },
        "Idempotent-Replayed": {
            "description": "`true` when this is the stored answer to an earlier request with"
            " the same Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }
}


def _accepted(
    record: TaskRecord, what: str, *, poll_after: int, replayed: bool = False
) -> Response:
    """The 202 of TaskAccepted's shape, serialised directly. A replay is the same answer as
    the first time (the task was PENDING then), marked as one."""
    location = f"/api/tasks/{record.task_id}"
    body = {
        "task_id": record.task_id,
        "status": TaskStatus.PENDING if replayed else record.status,
        "message": f"{what}; poll {location}",
    }
    headers = {"Location": location, "Retry-After": str(poll_after)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        orjson.dumps(body), status_code=202, media_type="application/json", headers=headers
    )


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


def _list_scope(query: TaskListQuery) -> bytes:
    """What a cursor is bound to: the filters of the list it pages through. The type only
    when given, so that the cursors made before there was a type filter stay valid."""
    filters: list[object] = [sorted(query.status), query.created_after, query.created_before]
    if query.type is not None:
        filters.append({"type": query.type})
    return orjson.dumps(filters, option=orjson.OPT_UTC_Z)


def _task_query(query: TaskListQuery, tenant: str) -> TaskQuery:
    after = None
    if query.cursor is not None:
        try:
            after = decode_cursor(query.cursor, scope=_list_scope(query))
        except InvalidCursor as exc:
            raise RequestValidationError(
                [{"loc": ("query", "cursor"), "msg": str(exc), "type": "value_error"}]
            ) from None
    return TaskQuery(
        statuses=frozenset(query.status),
        type=query.type,
        created_after=query.created_after,
        created_before=query.created_before,
        after=after,
        limit=query.limit,
        tenant=tenant,
    )


def task_routes(
    backends: Backends,
    settings: Settings,
    streams: StreamSlots,
    metrics: ApiMetrics | None = None,
) -> APIRouter:
    """`/api/tasks`: every endpoint takes the Request (and path parameters) and returns a
    Response (api.lean_route). `streams`: the slots its event streams share with the
    tenant's stream (api.events)."""
    router = APIRouter(prefix="/api/tasks", tags=["tasks"], route_class=LeanRoute)
    repository, publisher = backends.repository, backends.publisher
    poll_after = settings.poll_after_seconds
    key_ttl_seconds = settings.idempotency_key_ttl_hours * 3600
    rules = SubmitRules.of(settings)
    pressure = backends.pressure

    @router.post(
        "",
        status_code=202,
        response_model=TaskAccepted,
        summary="Submit a task",
        response_description="Stored as PENDING and queued; poll the Location header's URL.",
        responses={
            202: ACCEPTED_HEADERS,
            **problem_responses(400, 413, 415, 422, 500, 503),
        },
        openapi_extra={
            **task_create_request_body(
                max_delay_seconds=rules.max_delay_seconds, webhooks_on=rules.webhooks_on
            ),
            "parameters": [IDEMPOTENCY_KEY_PARAMETER],
        },
    )
    async def create_task(request: Request) -> Response:
        """Store the task and queue it for a worker.

        Answers 202 once the task is committed in MySQL. Its message is normally confirmed by
        RabbitMQ before the answer; if the broker is down, the dispatcher sends it when it is back.

        With an `Idempotency-Key`, the same key and body within IDEMPOTENCY_KEY_TTL_HOURS get
        the first answer again (`Idempotent-Replayed: true`) instead of a second task; the
        same key with another body is a 422.
        """
        pressure.check()  # TooMuchWaiting: a 503, before the body is read
        key = idempotency_key(request)
        typed = await task_create_body(request, rules)
        body = typed.body
        tenant = caller_of(request).owner
        stored_key = None
        if key is not None:
            stored_key = IdempotencyKey(
                client=tenant,  # a key is its tenant's: two tenants may use the same one
                key=key,
                fingerprint=fingerprint(body.model_dump(mode="json")),
                ttl_seconds=key_ttl_seconds,
            )
        record, replayed = await submit_task(
            repository=repository,
            publisher=publisher,
            title=body.title,
            description=body.description,
            metadata=body.metadata,
            task_type=body.type,
            payload=typed.payload,
            timeout_seconds=body.timeout_seconds,
            run_at=typed.run_at,
            callback_url=body.callback_url,
            idempotency_key=stored_key,
            tenant=tenant,
        )
        run_at = record.run_at
        scheduled = run_at is not None and run_at > datetime.now(UTC)
        what = (
            f"Task scheduled for {run_at.isoformat()}" if run_at and scheduled else "Task accepted"
        )
        if metrics is not None:
            metrics.submitted(body.type, replayed=replayed)
        return _accepted(record, what, poll_after=poll_after, replayed=replayed)

    @router.get(
        "",
        response_model=TaskPage,
        summary="List tasks, newest first",
        responses=problem_responses(400, 500, 503),
        openapi_extra={"parameters": LIST_PARAMETERS},
    )
    async def list_all_tasks(request: Request) -> Response:
        """A page of tasks, newest first, optionally of some statuses, one type and a creation
        time range. Pass the answer's `next_cursor` as `cursor` (with the same filters) for the
        next page. Each page is read from an index: as fast 10,000 rows deep as on top (with
        a type and a status, the type's rows are read until a page of that status is found)."""
        query = task_list_query(request)
        records, more = await list_tasks(
            repository=repository, query=_task_query(query, caller_of(request).owner)
        )
        last = records[-1] if more and records else None
        cursor = (
            None
            if last is None
            else encode_cursor(last.created_at, last.task_id, scope=_list_scope(query))
        )
        return _json({"items": [TaskPublic.dict_of(r) for r in records], "next_cursor": cursor})

    @router.get(
        "/stats",
        response_model=TaskStats,
        summary="How many tasks have each status",
        responses=problem_responses(500, 503),
    )
    async def stats(request: Request) -> Response:
        counts = await task_counts(repository=repository, tenant=caller_of(request).owner)
        return _json(
            {"counts": {s.value: n for s, n in counts.items()}, "total": sum(counts.values())}
        )

    @router.get(
        "/{task_id}",
        response_model=TaskPublic,
        summary="Get a task's status and details",
        responses=problem_responses(404, 500, 503),
    )
    async def read_task(task_id: str, request: Request) -> Response:
        record = await get_task(
            repository=repository, task_id=task_id, tenant=caller_of(request).owner
        )
        return Response(TaskPublic.json_of(record), media_type="application/json")

    @router.post(
        "/{task_id}/cancel",
        response_model=TaskPublic,
        summary="Cancel a PENDING or PROCESSING task",
        response_description="The task, now CANCELLED.",
        responses=problem_responses(404, 409, 500, 503),
    )
    async def cancel(task_id: str, request: Request) -> Response:
        """A PENDING task is CANCELLED at once and never runs. A PROCESSING task is CANCELLED
        at once too, and the worker running it stops its work within a second. A task that
        is already COMPLETED, FAILED or CANCELLED answers 409 with its status."""
        record = await cancel_task(
            repository=repository,
            broadcast_cancel=backends.broadcast_cancel,
            task_id=task_id,
            tenant=caller_of(request).owner,
        )
        return Response(TaskPublic.json_of(record), media_type="application/json")

    @router.get(
        "/{task_id}/events",
        summary="Follow a task's status live (Server-Sent Events)",
        responses={
            200: EVENTS_RESPONSE,
            204: {"description": "The task ended before the Last-Event-ID sent: nothing more."},
            **problem_responses(400, 404, 429, 500, 503),
        },
        openapi_extra={"parameters": [LAST_EVENT_ID_PARAMETER]},
    )
    async def events(task_id: str, request: Request) -> Response:
        """A `text/event-stream`: the task's latest event at once, then each transition as
        it is committed, and a `: keep-alive` comment every EVENTS_HEARTBEAT_SECONDS; it
        ends after a final status (COMPLETED, FAILED, CANCELLED). Reconnecting with
        `Last-Event-ID` sends every event after that one first, with no gap or repeat; after
        the final event there is nothing more, and the answer is 204 (an EventSource then
        stops reconnecting). A stopping API process ends its streams: clients reconnect."""
        return await _event_stream(backends, settings, task_id, request, streams, metrics)

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
        record = await retry_task(
            repository=repository,
            publisher=publisher,
            task_id=task_id,
            tenant=caller_of(request).owner,
        )
        return _accepted(record, "Task queued again", poll_after=poll_after)

    return router


class StreamSlots:
    """How many event streams each tenant holds open in this process, bounded
    (MAX_STREAMS_PER_TENANT): one stream more is a 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def take(self, tenant: str) -> bool:
        held = self._open.get(tenant, 0)
        if held >= self.limit:
            return False
        self._open[tenant] = held + 1
        return True

    def give_back(self, tenant: str) -> None:
        held = self._open.pop(tenant, 1) - 1
        if held:
            self._open[tenant] = held


class _HeldStream(StreamingResponse):
    """A stream that gives its slot back however it ends (finished, client gone, cancelled)."""

    def __init__(
        self, content: AsyncIterator[bytes], release: Callable[[], None], **options: Any
    ) -> None:
        super().__init__(content, **options)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def _event_stream(
    backends: Backends,
    settings: Settings,
    task_id: str,
    request: Request,
    streams: StreamSlots,
    metrics: ApiMetrics | None = None,
) -> Response:
    """The answer of GET /api/tasks/{task_id}/events (see `events` above)."""
    repository = backends.repository
    after = last_event_id(request)
    tenant = caller_of(request).owner
    record = await get_task(repository=repository, task_id=task_id, tenant=tenant)
    if after is not None and record.is_final:
        # A client reconnecting after the end (as EventSource does): 204 tells it to stop.
        missed = await repository.events_after(record.task_id, after, limit=1)
        if not missed:
            return Response(status_code=204)
    stream = task_event_stream(
        repository=repository,
        hub=backends.events,
        task_id=record.task_id,
        last_event_id=after,
        heartbeat_seconds=settings.events_heartbeat_seconds,
    )
    return held_stream(
        stream, tenant, streams, settings, metrics, context={"task_id": record.task_id}
    )


def held_stream(
    stream: AsyncIterator[bytes],
    tenant: str,
    streams: StreamSlots,
    settings: Settings,
    metrics: ApiMetrics | None,
    *,
    context: dict[str, str],
) -> Response:
    """The stream as a `text/event-stream` answer that holds one of the tenant's slots until
    it ends, or the 429 problem when the tenant holds them all. `context`: what its log line
    names if the database ends it."""
    if not streams.take(tenant):
        return problem(
            429,
            f"At most {streams.limit} event streams may be open at once (MAX_STREAMS_PER_TENANT);"
            " close one first.",
            type_=TOO_MANY_STREAMS_PROBLEM,
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    quiet = _ending_quietly(stream, context)
    return _HeldStream(
        quiet if metrics is None else metrics.streaming(quiet),
        lambda: streams.give_back(tenant),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _ending_quietly(
    stream: AsyncIterator[bytes], context: dict[str, str]
) -> AsyncIterator[bytes]:
    """Once the stream has begun, an unavailable database can only end it: the client
    reconnects with Last-Event-ID and misses nothing."""
    try:
        async for chunk in stream:
            yield chunk
    except DependencyUnavailable as exc:
        logger.warning("event stream ended", extra={**context, "error": str(exc)})


def task_type_routes(settings: Settings) -> APIRouter:
    """`/api/task-types`: the catalogue (common.task_types), the same for every caller."""
    router = APIRouter(prefix="/api/task-types", tags=["task types"], route_class=LeanRoute)
    catalogue = orjson.dumps(
        {"items": [type_entry(t, settings.max_attempts) for t in CATALOGUE.values()]}
    )

    @router.get(
        "",
        response_model=TaskTypeList,
        summary="The task types a task may have, with their payload's JSON Schema",
        responses=problem_responses(500),
    )
    async def task_types(request: Request) -> Response:
        return Response(catalogue, media_type="application/json")

    return router
