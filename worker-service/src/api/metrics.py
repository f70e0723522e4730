"""GET /metrics on the worker's port: the Prometheus text format of services.metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from api.app import ASGIApp, Receive, Scope, Send, problem_body, send_json
from services.metrics import WorkerMetrics


def metrics_route(metrics: WorkerMetrics) -> ASGIApp:
    """The route for api.app.RouteTable: GET (and HEAD) only, like the health routes."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            detail = f"{scope['path']} answers GET and HEAD only"
            await send_json(send, 405, problem_body(405, detail), headers={"allow": "GET, HEAD"})
            return
        body = metrics.exposition()
        headers = [
            (b"content-type", CONTENT_TYPE_LATEST.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return endpoint
