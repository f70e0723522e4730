"""The worker's HTTP port as a plain ASGI app: a table of exact paths, each an ASGI app.

    routes = health_routes(ready=...)                        # api.health
    routes["/metrics"] = prometheus_client.make_asgi_app()   # any ASGI app fits in the table
    app = RouteTable(routes)

A handful of fixed GET paths needs no web framework, and the worker's image has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from http import HTTPStatus
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# What a JSON endpoint returns: the status and the body (a problem's body for a 4xx or 5xx).
Answer = tuple[int, dict[str, Any]]

JSON = "application/json"
PROBLEM = "application/problem+json"


def problem_body(
    status: int, detail: str, *, type_: str = "about:blank", **extensions: Any
) -> dict[str, Any]:
    """An RFC 9457 problem, shaped as the API's (api-service/src/api/problems.py)."""
    title = HTTPStatus(status).phrase
    return {"type": type_, "title": title, "status": status, "detail": detail, **extensions}


async def send_json(
    send: Send, status: int, body: object, *, headers: Mapping[str, str] | None = None
) -> None:
    """One whole answer; a 4xx or 5xx is a problem (application/problem+json)."""
    payload = orjson.dumps(body)
    fields = [
        (b"content-type", (PROBLEM if status >= 400 else JSON).encode()),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": payload})


def json_endpoint(answer: Callable[[], Awaitable[Answer]]) -> ASGIApp:
    """A route answering GET (and HEAD: uvicorn leaves the body out) with what `answer`
    returns; any other method is a 405."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            detail = f"{scope['path']} answers GET and HEAD only"
            await send_json(send, 405, problem_body(405, detail), headers={"allow": "GET, HEAD"})
            return
        status, body = await answer()
        await send_json(send, status, body)

    return endpoint


class RouteTable:
    """The ASGI app: each request goes to the app of its exact path, or is a 404 problem.

    Built with every route before it is served (`routes` is copied): add a route by putting
    it in the mapping given here."""

    def __init__(self, routes: Mapping[str, ASGIApp]) -> None:
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # served with lifespan and websockets off: nothing else
            return
        route = self.routes.get(scope["path"])
        if route is None:
            served = ", ".join(sorted(self.routes))
            detail = f"no route {scope['path']}; this port serves {served}"
            await send_json(send, 404, problem_body(404, detail))
            return
        await route(scope, receive, send)
