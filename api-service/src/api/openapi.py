"""OpenAPI entries for the error answers, which FastAPI would otherwise list as JSON."""

from __future__ import annotations

import copy
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ValidationError

from common.task_types import CATALOGUE, DEFAULT_TYPE, TaskType
from models.problems import Problem
from models.tasks import STORABLE_JSON_SCHEMA, TaskCreate, TaskEventPublic

_EXAMPLES: dict[int, dict[str, Any]] = {
    401: {
        "type": "/problems/unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "This API needs an API key: send Authorization: Bearer <key>.",
    },
    400: {
        "type": "/problems/validation-error",
        "title": "Invalid request",
        "status": 400,
        "detail": "The request is invalid: title: must not be blank",
        "instance": "/api/tasks",
        "errors": [{"field": "title", "message": "must not be blank", "type": "value_error"}],
    },
    404: {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "task 0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f does not exist",
        "instance": "/api/tasks/0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",
    },
    409: {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "task 0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f is COMPLETED; only a FAILED task can be retried",
        "instance": "/api/tasks/0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f/retry",
        "task_status": "COMPLETED",
    },
    413: {
        "type": "about:blank",
        "title": "Request Entity Too Large",
        "status": 413,
        "detail": "The request body is larger than 1048576 bytes.",
    },
    415: {
        "type": "about:blank",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": "Content-Type must be application/json.",
        "instance": "/api/tasks",
    },
    422: {
        "type": "/problems/idempotency-key-reused",
        "title": "Idempotency-Key reused",
        "status": 422,
        "detail": "this Idempotency-Key was already used with a different request body",
        "instance": "/api/tasks",
    },
    429: {
        "type": "/problems/rate-limited",
        "title": "Too Many Requests",
        "status": 429,
        "detail": "Too many requests: at most 20 at once and 10 a second; retry after 1 s.",
    },
    500: {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "An unexpected error occurred.",
    },
    503: {
        "type": "/problems/service-unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "The database is unavailable; try again later.",
        "instance": "/api/tasks",
    },
}

_DESCRIPTIONS = {
    400: "Malformed JSON, or a body that breaks the rules (each bad field is listed).",
    401: "API keys are on (API_KEYS) and the request has no valid one; `WWW-Authenticate`"
    " says which.",
    404: "No task has this id.",
    409: "The task's status does not allow this; `task_status` says what it is.",
    422: "The Idempotency-Key was used before with a different body.",
    413: "The body is larger than MAX_BODY_BYTES.",
    415: "The body is not declared as JSON.",
    429: "Over the caller's rate limit (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST: `RateLimit` and"
    " `Retry-After` say when to come back) or, for an event stream, over"
    " MAX_STREAMS_PER_TENANT open at once.",
    500: "An unexpected error; details are in the server log, not in the answer.",
    503: "The database did not answer; try again after Retry-After seconds. (A broker outage"
    " is no 503: the task is accepted and its message sent once the broker is back.)",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries for the given error statuses."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {
                "application/problem+json": {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "example": _EXAMPLES[status],
                }
            },
        }
        for status in statuses
    }


def install_openapi(app: FastAPI) -> None:
    """Build the document once, with the Problem and TaskCreate schemas (named by routes
    that read their body themselves) added to its components."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (Problem, TaskCreate, TaskEventPublic):
                schema = model.model_json_schema(ref_template=_REF)
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            _storable_values(components)
            components["TaskCreate"]["allOf"] = _task_create_rules(components)
            _drop_422(document)
            _add_keys_and_limits(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]


_REF = "#/components/schemas/{model}"


def _storable_values(components: dict[str, Any]) -> None:
    """TaskCreate's `metadata` and `payload` hold JSON values that MySQL keeps as they are
    (models.tasks `_storable`), described once as StorableJson."""
    components["StorableJson"] = copy.deepcopy(STORABLE_JSON_SCHEMA)
    properties = components["TaskCreate"]["properties"]
    for name in ("metadata", "payload"):
        for branch in properties[name]["anyOf"]:
            if branch.get("type") == "object":
                branch["additionalProperties"] = {"$ref": _REF.format(model="StorableJson")}


def _task_create_rules(components: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules of TaskCreate that tie one field to another (models.tasks checks them after
    the fields): `payload` and `timeout_seconds` as the `type` allows (common.task_types),
    each type's payload schema added to the components; and `run_at` or `delay_seconds`,
    never both."""
    rules = [_type_rule(task_type, components) for task_type in CATALOGUE.values()]
    both = {"run_at": {"type": "string"}, "delay_seconds": {"type": "number"}}
    rules.append({"not": {"properties": both, "required": list(both)}})
    return rules


def _type_rule(task_type: TaskType, components: dict[str, Any]) -> dict[str, Any]:
    """A task of this type: its payload valid for the type's model (left out or null only
    where the model's defaults make one), its timeout within the type's maximum."""
    model = task_type.payload
    components[model.__name__] = model.model_json_schema(ref_template=_REF)
    payload: dict[str, Any] = {"$ref": _REF.format(model=model.__name__)}
    needs_payload = not _valid(model, {})
    if not needs_payload:
        payload = {"anyOf": [payload, {"type": "null"}]}
    timeout = {"type": "integer", "minimum": 1, "maximum": task_type.max_timeout_seconds}
    then: dict[str, Any] = {
        "properties": {
            "payload": payload,
            "timeout_seconds": {"anyOf": [timeout, {"type": "null"}]},
        }
    }
    if needs_payload:
        then["required"] = ["payload"]
    named: dict[str, Any] = {
        "properties": {"type": {"const": task_type.name}},
        "required": ["type"],
    }
    if task_type.name == DEFAULT_TYPE:
        named = {"anyOf": [named, {"not": {"required": ["type"]}}]}
    return {"if": named, "then": then}


def _valid(model: type[BaseModel], value: dict[str, Any]) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def _drop_422(document: dict[str, Any]) -> None:
    """FastAPI lists a 422 on every route with a body or parameters; this API answers 400
    (a 422 is only a reused Idempotency-Key, listed with its own problem)."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if "application/json" in responses.get("422", {}).get("content", {}):
                responses.pop("422")
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


SECURITY_SCHEME = "apiKey"


def _add_keys_and_limits(document: dict[str, Any]) -> None:
    """Every /api/ operation takes an API key (`Authorization: Bearer`) once API_KEYS is set,
    and none while it is empty (the default): both are listed, the key first, with the 401
    the key can bring, and the 429 of the rate limit (when RATE_LIMIT_PER_SECOND is set)."""
    document["components"]["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from API_KEYS (make api-key prints one). Needed only"
            " when the service runs with API_KEYS set.",
        }
    }
    for path, operations in document.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue
        for operation in operations.values():
            operation["security"] = [{SECURITY_SCHEME: []}, {}]
            responses = operation.setdefault("responses", {})
            responses.update(
                {str(code): entry for code, entry in problem_responses(401, 429).items()}
            )
