"""Pure ASGI middleware: the body size limit, and a 500 problem for anything unhandled."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem

logger = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    pass


# After the limit is passed, up to this much more is read and thrown away before answering,
# so that a client still sending its body sees the 413 instead of a reset connection.
_DRAIN_BYTES = 16 * 1024 * 1024
_DRAIN_SECONDS = 5.0


class BodySizeLimit:
    """413 for a body over `max_bytes`, counted as it streams in.

    A chunked body has no Content-Length, so the count is what decides; once it passes the
    limit, the app stops reading and whatever it would have answered is replaced by the 413.
    A request with a Content-Length and no Transfer-Encoding cannot send more than it
    declared (the HTTP parser ends the body there), so checking the number is enough.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _body_framing(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(scope, receive, send, more_body=True)
            return
        if not chunked:  # declared within the limit, or no body at all
            await self.app(scope, receive, send)
            return
        received = 0
        exceeded = False
        more_body = True

        async def limited_receive() -> Message:
            nonlocal received, exceeded, more_body
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded:
            await self._too_large(scope, receive, send, more_body=more_body)

    async def _too_large(
        self, scope: Scope, receive: Receive, send: Send, *, more_body: bool
    ) -> None:
        if more_body:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_DRAIN_SECONDS):
                    await _drain(receive, _DRAIN_BYTES)
        response = problem(
            413,
            f"The request body is larger than {self.max_bytes} bytes.",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


async def _drain(receive: Receive, limit: int) -> None:
    drained = 0
    while drained < limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))


def _body_framing(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length if valid, whether the body must be counted as it streams): a
    Transfer-Encoding, or a Content-Length that is not a number, leaves only the count."""
    declared: int | None = None
    counted = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                counted = True
        elif name == b"transfer-encoding":
            counted = True
    return declared, counted


class UnhandledErrors:
    """The last line: log an unexpected exception with its traceback, answer a bare 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error", extra={"path": scope.get("path")})
            if not started:
                await problem(500, "An unexpected error occurred.")(scope, receive, send)
