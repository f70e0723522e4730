"""Every error answer as RFC 9457 Problem Details, built in one place."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from common.errors import (
    DependencyUnavailable,
    IdempotencyKeyReused,
    TaskNotCancellable,
    TaskNotFailed,
    TaskNotFound,
    TooMuchWaiting,
)

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
VALIDATION_PROBLEM = "/problems/validation-error"
MALFORMED_JSON_PROBLEM = "/problems/malformed-json"
UNAVAILABLE_PROBLEM = "/problems/service-unavailable"
IDEMPOTENCY_KEY_REUSED_PROBLEM = "/problems/idempotency-key-reused"
BACKPRESSURE_PROBLEM = "/problems/backpressure"


def problem(
    status: int,
    detail: str,
    *,
    type_: str = "about:blank",
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body = {
        "type": type_,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extensions,
    }
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _field_name(location: tuple[int | str, ...]) -> str:
    # ("body", "metadata") -> "metadata"; the whole body itself is "body". Likewise
    # ("query", "limit") -> "limit" and ("header", "Idempotency-Key") -> "Idempotency-Key".
    where = location[:1]
    parts = location[1:] if where in (("body",), ("query",), ("header",)) else location
    return ".".join(str(part) for part in parts) or "body"


def _validation_problem(request: Request, exc: RequestValidationError) -> Response:
    errors = exc.errors()
    if any(error["type"] == "json_invalid" for error in errors):
        return problem(
            400,
            "The request body is not valid JSON.",
            type_=MALFORMED_JSON_PROBLEM,
            title="Malformed JSON",
            instance=request.url.path,
        )
    fields = [
        {
            "field": _field_name(tuple(error["loc"])),
            "message": str(error["msg"]).removeprefix("Value error, "),
            "type": error["type"],
        }
        for error in errors
    ]
    return problem(
        400,
        "The request is invalid: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields),
        type_=VALIDATION_PROBLEM,
        title="Invalid request",
        instance=request.url.path,
        errors=fields,
    )


def _allowed_methods(request: Request) -> str:
    """Every method the API serves at this path, as its OpenAPI document lists them
    (Starlette's 405 names only the methods of the first route that matched the path)."""
    paths = request.app.openapi().get("paths", {})
    path = request.url.path
    methods = {
        method.upper()
        for template, operations in paths.items()
        if compile_path(template)[0].match(path)
        for method in operations
    }
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return problem(exc.status_code, str(exc.detail), headers=headers, instance=request.url.path)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _validation_problem(request, exc)

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return problem(404, str(exc), instance=request.url.path)

    async def on_wrong_status(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TaskNotFailed | TaskNotCancellable)
        return problem(409, str(exc), instance=request.url.path, task_status=exc.status)

    async def on_key_reused(request: Request, exc: Exception) -> Response:
        return problem(
            422,
            str(exc),
            type_=IDEMPOTENCY_KEY_REUSED_PROBLEM,
            title="Idempotency-Key reused",
            instance=request.url.path,
        )

    async def on_backlogged(request: Request, exc: Exception) -> Response:
        return problem(
            503,
            str(exc),
            type_=BACKPRESSURE_PROBLEM,
            headers={"Retry-After": str(retry_after_seconds)},
            instance=request.url.path,
        )

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DependencyUnavailable)
        logger.warning(
            "dependency unavailable", extra={"component": exc.component, "error": str(exc)}
        )
        return problem(
            503,
            f"The {exc.component} is unavailable; try again later.",
            type_=UNAVAILABLE_PROBLEM,
            headers={"Retry-After": str(retry_after_seconds)},
            instance=request.url.path,
        )

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(TaskNotFound, on_not_found)
    app.add_exception_handler(TaskNotFailed, on_wrong_status)
    app.add_exception_handler(TaskNotCancellable, on_wrong_status)
    app.add_exception_handler(IdempotencyKeyReused, on_key_reused)
    app.add_exception_handler(DependencyUnavailable, on_unavailable)
    app.add_exception_handler(TooMuchWaiting, on_backlogged)
