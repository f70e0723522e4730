"""What every answer tells a browser and a cache: pure ASGI middleware for the headers that
do not depend on the route, and CORS when CORS_ORIGINS lists origins.

`X-Content-Type-Options: nosniff` on every answer, so that no browser runs a JSON body (or
a problem) it guessed to be HTML or script. `Cache-Control: no-store` on the task resources
(everything under /api/tasks, problems included): a task changes under its URL, and may be
a tenant's own, so no cache in between should keep a copy. A route that sets its own
Cache-Control keeps it: the event stream's `no-cache`.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.settings import Settings

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")
_TASKS = "/api/tasks"
_UNDER_TASKS = "/api/tasks/"

# What a page on a listed origin may send and read (CORS_ORIGINS).
CORS_METHODS = ("GET", "POST", "OPTIONS")
CORS_REQUEST_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "Last-Event-ID",
    "traceparent",
    "tracestate",
    "X-Request-ID",
)
CORS_EXPOSED_HEADERS = (
    "Location",
    "Retry-After",
    "Idempotent-Replayed",
    "X-Request-ID",
    "RateLimit",
    "RateLimit-Policy",
)


class ResponseHeaders:
    """nosniff on every answer; no-store on the task resources unless the route chose."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        task_resource = path == _TASKS or path.startswith(_UNDER_TASKS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A new list: the message's may be a Response's own, reused, or a tuple.
                headers = [*message.get("headers", ()), _NOSNIFF]
                if task_resource and not any(
                    name.lower() == b"cache-control" for name, _ in headers
                ):
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Starlette's CORSMiddleware for the origins CORS_ORIGINS lists; with none, nothing (no
    CORS headers at all). Add it outside the API keys: a preflight carries no key."""
    origins = settings.cors_allowed_origins
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=CORS_METHODS,
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        allow_credentials=False,  # the key is a header the page sends, never a cookie
    )
