"""uvicorn's httptools protocol with the bounds it lacks: a request must arrive whole within
REQUEST_READ_TIMEOUT_SECONDS, and its headers are bounded in number (MAX_HEADERS) and in bytes
(MAX_HEADER_BYTES).

uvicorn arms no timer before a request's first byte nor while its head or body trickle in,
and httptools bounds neither the header count nor their size: one client could hold a
connection (and memory) for ever with a byte a minute (slowloris), or send a 16 MB header.
Here the clock starts when a connection opens and again when each request on it begins, and
stops once the request is read to its end: past the timeout the connection gets a `408` (or is
closed, if the app already answered) and is closed. Headers past a bound get a `431` and the
connection is closed, before the app sees the request.

uvicorn takes the class by its import string (`http="api.http_guard:GuardedHttpToolsProtocol"`),
which each of API_WORKERS' processes imports afresh: so the bounds are the class's, set by
`_serve` in the process that runs uvicorn, and read from the environment's settings in a
process that starts without them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from common.settings import Settings, load_settings

IMPORT_STRING = "api.http_guard:GuardedHttpToolsProtocol"


@dataclass(frozen=True, slots=True)
class RequestLimits:
    read_timeout_seconds: float
    max_headers: int
    max_header_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> RequestLimits:
        return cls(
            settings.request_read_timeout_seconds,
            settings.max_headers,
            settings.max_header_bytes,
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits: RequestLimits | None = None  # None: from load_settings() at the first connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cls = type(self)
        if cls.limits is None:
            cls.limits = RequestLimits.of(load_settings())
        self._limits = cls.limits
        self._read_timer: asyncio.TimerHandle | None = None
        self._header_count = 0
        self._header_bytes = 0
        self._refusal: int | None = None  # the status of a refusal under way (431)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends its first byte is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = self._header_bytes = 0
        if self._read_timer is None:
            self._arm()

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may hand a header over in pieces: each piece counts its bytes.
        self._header_count += 1
        self._header_bytes += len(name) + len(value)
        limits = self._limits
        if self._header_count > limits.max_headers or self._header_bytes > limits.max_header_bytes:
            self._refusal = 431
            raise _TooLarge  # httptools stops and raises; uvicorn answers with send_400_response
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        self._disarm()  # read whole: what the app does with it now has no such clock
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        # Every refusal here as a problem document, as the app's own are.
        if self._refusal == 431:
            detail = (
                "The request's headers are too many or too large (MAX_HEADERS, MAX_HEADER_BYTES)."
            )
            self._refuse(431, detail)
        else:
            self._refuse(400, "The request is not valid HTTP/1.1.")

    def _arm(self) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(self._limits.read_timeout_seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _too_slow(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self._refuse(408, "The request was not received within REQUEST_READ_TIMEOUT_SECONDS.")
        else:
            self.transport.close()
        if self.cycle is not None:
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` with a problem document and close: the request cannot be read on."""
        body = orjson.dumps(
            {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
             "detail": detail}
        )  # fmt: skip
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class _TooLarge(Exception):
    pass
