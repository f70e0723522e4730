"""What the routes take from the request: the task body, the list's query, the headers.

The hot routes take the `Request` alone and call these directly instead of declaring
FastAPI dependencies: solving dependencies and validating a parsed dict cost more than
the rest of the request (see docs/benchmarks.md). Their collaborators come from the
`Backends` the routes were built with (api.routes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from common.settings import Settings
from models.figures import ThroughputQuery
from models.tasks import MAX_EVENT_ID, TaskCreate, TaskListQuery
from services.idempotency import InvalidIdempotencyKey, parse_idempotency_key
from services.webhooks.targets import TargetRefused, check_url


def require_json_body(request: Request) -> None:
    """415 unless the body is declared as JSON (`application/json` or `application/*+json`)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(415, "Content-Type must be application/json.")


@dataclass(frozen=True, slots=True)
class TypedTaskCreate:
    body: TaskCreate
    payload: dict[str, Any] | None  # as the type's model made it
    run_at: datetime | None = None  # from run_at or delay_seconds


@dataclass(frozen=True, slots=True)
class SubmitRules:
    """What a task body is checked against beyond its model: the settings' limits."""

    max_delay_seconds: int
    webhook_hosts: frozenset[str]  # WEBHOOK_ALLOWED_HOSTS
    webhooks_on: bool  # WEBHOOK_SECRET is set
    # MAX_METADATA_BYTES, for `metadata` and `payload` each; the setting's default until the
    # rules are built with `of`.
    max_metadata_bytes: int = Settings.model_fields["max_metadata_bytes"].default

    @classmethod
    def of(cls, settings: Settings) -> SubmitRules:
        """The rules the settings give."""
        return cls(
            max_delay_seconds=settings.max_delay_seconds,
            webhook_hosts=settings.webhook_hosts,
            webhooks_on=settings.webhook_secret is not None,
            max_metadata_bytes=settings.max_metadata_bytes,
        )


async def task_create_body(request: Request, rules: SubmitRules) -> TypedTaskCreate:
    """The body parsed and validated in one pass by pydantic-core, then its payload against
    its type's model, its schedule against the clock and its callback URL against the SSRF
    guard; a bad one raises the same RequestValidationError (errors located under "body")
    that FastAPI would."""
    require_json_body(request)
    try:
        body = TaskCreate.from_json(await request.body(), max_json_bytes=rules.max_metadata_bytes)
    except ValidationError as exc:
        raise _body_errors(exc.errors(include_url=False)) from None
    payload, errors = body.type_errors()
    run_at = None
    if body.run_at is not None or body.delay_seconds is not None:
        run_at, schedule_errors = body.schedule_errors(datetime.now(UTC), rules.max_delay_seconds)
        errors += schedule_errors
    if body.callback_url is not None and not errors:
        problem = await _callback_problem(body.callback_url, rules)
        if problem is not None:
            errors.append(
                {"loc": ("callback_url",), "msg": problem, "type": "value_error", "input": None}
            )
    if errors:
        raise _body_errors(errors)
    return TypedTaskCreate(body, payload, run_at)


async def _callback_problem(url: str, rules: SubmitRules) -> str | None:
    if not rules.webhooks_on:
        return "webhooks are off on this server (WEBHOOK_SECRET is not set)"
    try:
        await check_url(url, rules.webhook_hosts)
    except TargetRefused as exc:
        return str(exc)
    return None


def _body_errors(errors: Sequence[Any]) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors])


def _invalid(location: str, name: str, message: str, value: object) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": (location, name), "msg": message, "type": "value_error", "input": value}]
    )


def task_list_query(request: Request) -> TaskListQuery:
    """The query string of `GET /api/tasks`; `status` may be given several times."""
    params: dict[str, object] = dict(request.query_params)
    params["status"] = request.query_params.getlist("status")
    try:
        return TaskListQuery.model_validate(params)
    except ValidationError as exc:
        raise _query_errors(exc) from None


def throughput_query(request: Request) -> ThroughputQuery:
    """The query string of `GET /api/tasks/throughput`."""
    try:
        return ThroughputQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise _query_errors(exc) from None


def _query_errors(exc: ValidationError) -> RequestValidationError:
    """Each error located at its query parameter (as FastAPI locates them)."""
    errors = exc.errors(include_url=False)
    return RequestValidationError(
        [{**error, "loc": ("query", *error["loc"][:1])} for error in errors]
    )


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    try:
        return parse_idempotency_key(value)
    except InvalidIdempotencyKey as exc:
        raise _invalid("header", "Idempotency-Key", str(exc), value) from None


def last_event_id(request: Request) -> int | None:
    """Last-Event-ID, which an EventSource sends when it reconnects: an event id we sent."""
    value = request.headers.get("last-event-id")
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 20 or int(value) > MAX_EVENT_ID:
        raise _invalid("header", "Last-Event-ID", "must be an event id (a whole number)", value)
    return int(value)
