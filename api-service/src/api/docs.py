"""OpenAPI entries for what the lean routes read themselves: query parameters, headers, and
the event stream's answer."""

from __future__ import annotations

from typing import Any

from common.tasks import TaskStatus

IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes the submit safe to repeat (draft-ietf-httpapi-idempotency-key-header): a"
        ' Structured Field string (`"…"`) or the same text unquoted, 1-255 printable ASCII'
        " characters without spaces. Scoped to the client; kept IDEMPOTENCY_KEY_TTL_HOURS."
    ),
    "schema": {"type": "string", "maxLength": 257},
    "example": '"order-8731-thumbnails"',
}

LAST_EVENT_ID_PARAMETER: dict[str, Any] = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "The `id:` of the last event received: the stream resumes after it.",
    "schema": {"type": "integer", "minimum": 0},
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
        "schema": {"type": "string"},
    },
]

EVENTS_RESPONSE: dict[str, Any] = {
    "description": (
        "A stream of Server-Sent Events. Each event's `id:` is its task_events id and its"
        " `data:` a TaskEventPublic document; comments (`: keep-alive`) keep it open."
    ),
    "content": {
        "text/event-stream": {
            "schema": {"type": "string"},
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
