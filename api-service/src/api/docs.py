"""OpenAPI entries for what the lean routes read themselves: the task body, query parameters,
headers, and the event stream's answer."""

from __future__ import annotations

from typing import Any

from common.task_types import CATALOGUE
from common.tasks import TaskStatus
from models.figures import MAX_THROUGHPUT_MINUTES
from models.tasks import MAX_EVENT_ID


def task_create_request_body(*, max_delay_seconds: int, webhooks_on: bool) -> dict[str, Any]:
    """The body of `POST /api/tasks`, which the route reads itself (api.deps): TaskCreate, as
    this server's settings narrow it: MAX_DELAY_SECONDS bounds `delay_seconds`, and without
    WEBHOOK_SECRET a `callback_url` is refused."""
    delay = {"type": "number", "minimum": 0, "maximum": max_delay_seconds}
    narrowed: dict[str, Any] = {"delay_seconds": {"anyOf": [delay, {"type": "null"}]}}
    if not webhooks_on:
        narrowed["callback_url"] = {
            "type": "null",
            "description": "Webhooks are off on this server (WEBHOOK_SECRET is not set).",
        }
    schema = {"$ref": "#/components/schemas/TaskCreate", "properties": narrowed}
    return {"requestBody": {"content": {"application/json": {"schema": schema}}, "required": True}}


IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the submit safe to repeat (draft-ietf-httpapi-idempotency-key-header): a"
        ' Structured Field string (`"…"`) or the same text unquoted, 1-255 printable ASCII'
        " characters without spaces. Scoped to the client; kept IDEMPOTENCY_KEY_TTL_HOURS."
    ),
    # What services.idempotency accepts: the key bare (no quote or backslash in it), or as a
    # Structured Field string whose text, escapes undone, is the key.
    "schema": {
        "type": "string",
        "pattern": r'^(?:[\x21\x23-\x5b\x5d-\x7e]{1,255}|"(?:[\x21\x23-\x5b\x5d-\x7e]|\\["\\]){1,255}")$',
    },
    "example": '"order-8731-thumbnails"',
}

LAST_EVENT_ID_PARAMETER: dict[str, Any] = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "The `id:` of the last event received: the stream resumes after it. Empty,"
    " it is the same as none.",
    "schema": {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID},
            {"type": "string", "maxLength": 0},
        ]
    },
}

LIST_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "status",
        "in": "query",
        "required": False,
        "description": "Only tasks with this status; repeat for several.",
        "schema": {"type": "array", "items": {"type": "string", "enum": list(TaskStatus)}},
        "style": "form",
        "explode": True,
    },
    {
        "name": "type",
        "in": "query",
        "required": False,
        "description": "Only tasks of this type: a name from `GET /api/task-types`.",
        "schema": {"type": "string", "enum": sorted(CATALOGUE)},
        "example": "hash_chain",
    },
    {
        "name": "created_after",
        "in": "query",
        "required": False,
        "description": "Only tasks created at or after this time (RFC 3339, with an offset).",
        "schema": {"type": "string", "format": "date-time"},
        "example": "2026-12-01T00:00:00Z",
    },
    {
        "name": "created_before",
        "in": "query",
        "required": False,
        "description": "Only tasks created before this time (RFC 3339, with an offset).",
        "schema": {"type": "string", "format": "date-time"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Tasks per page.",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The `next_cursor` of the previous page, with the same filters.",
        # Opaque, but URL-safe base64 (services.cursors); TaskListQuery bounds its length.
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": "^[A-Za-z0-9_-]+$",
        },
    },
]

THROUGHPUT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "minutes",
        "in": "query",
        "required": False,
        "description": "How many minutes back, the current one included.",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_THROUGHPUT_MINUTES,
            "default": 60,
        },
    },
]

EVENTS_RESPONSE: dict[str, Any] = {
    "description": (
        "A stream of Server-Sent Events. Each event's `id:` is its task_events id and its"
        " `data:` a TaskEventPublic document; comments (`: keep-alive`) keep it open."
    ),
    "content": {
        "text/event-stream": {
            # Open API 3.1 has no schema for a whole stream: this one is of each event, as an
            # EventSource hands it over (its type, `id:` and `data:`).
            "schema": {
                "type": "object",
                "properties": {
                    "event": {"const": "message"},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": "#/components/schemas/TaskEventPublic"},
                    },
                },
                "required": ["event", "id", "data"],
            },
            "example": (
                "retry: 2000\n\n"
                'id: 4710\ndata: {"event_id":4710,"task_id":"0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",'
                '"kind":"started","status":"PROCESSING","attempts":1,"error":null,'
                '"updated_at":"2026-11-28T01:20:52.951210+00:00"}\n\n'
                ": keep-alive\n\n"
                'id: 4711\ndata: {"event_id":4711,"task_id":"0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",'
                '"kind":"completed","status":"COMPLETED","attempts":1,"error":null,'
                '"updated_at":"2026-11-28T01:21:00.112358+00:00"}\n\n'
            ),
        }
    },
}
