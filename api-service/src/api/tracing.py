"""Each request's ids: its X-Request-ID and its trace, on the answer and in the logs.

`X-Request-ID` is the client's when it sends a usable one (up to 200 visible ASCII characters),
otherwise a new UUID; the answer echoes it, and every record logged while the request is
handled carries it as request_id, with the trace_id of its trace when it has one. With
tracing on (common.tracing), the FastAPI instrumentation makes the request's server span
from its `traceparent` (or starts a trace), by the stable HTTP semantic conventions; off, a
valid `traceparent` is only passed on to the task's message, so the worker continues it.
"""

from __future__ import annotations

import os
import re

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import tracing
from common.logs import bind, unbind

_USABLE_ID = re.compile(rb"[!-~]{1,200}")
# Probes, scraped every few seconds: a trace each would bury the ones of tasks.
_UNTRACED_URLS = "/health,/metrics"


def new_request_id() -> bytes:
    """A random (version 4) UUID in its canonical form: what str(uuid.uuid4()) gives, at
    half its cost (it is made for every request that brings none)."""
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"
    ).encode()


class RequestIds:
    """Pure ASGI: reads the headers once and wraps `send` to add X-Request-ID to the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        if request_id is None or not _USABLE_ID.fullmatch(request_id):
            request_id = new_request_id()
        echoed = (b"x-request-id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                # A dict of its own (Starlette makes one per call); the list may be the
                # response's, so it is not appended to.
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        trace_id, received = tracing.receive(traceparent, tracestate)
        ids = request_id.decode()
        logged = (
            bind(request_id=ids) if trace_id is None else bind(request_id=ids, trace_id=trace_id)
        )
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            unbind(logged)
            tracing.leave(received)


def install_tracing(app: FastAPI) -> None:
    """Request ids on every request (outermost of our middleware: add it last), and with
    tracing on the FastAPI instrumentation around all of it."""
    app.add_middleware(RequestIds)
    provider = tracing.tracer_provider()
    if provider is None:
        return
    # Imported only with tracing on (0.15 s at start). Its HTTP spans follow the stable
    # conventions (http.request.method, http.route, http.response.status_code) unless the
    # operator chose otherwise; it reads the variable once, at its first instrumentation.
    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=_UNTRACED_URLS,
        # No spans of their own for each ASGI message sent and received.
        exclude_spans=["receive", "send"],
    )
