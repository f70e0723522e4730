"""The HTTP guard under a real uvicorn (api/http_guard.py): requests that trickle in, or never
start, are cut with a 408 after REQUEST_READ_TIMEOUT_SECONDS; too many or too large headers
are a 431; both are problem documents, and a request read in time is never cut, however long
the app then takes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest

from api.http_guard import IMPORT_STRING, GuardedHttpToolsProtocol, RequestLimits
from testkit.serving import served

pytestmark = pytest.mark.unit

TIMEOUT = 0.5


async def slow_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body, then takes a second to answer with its length."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await asyncio.sleep(2 * TIMEOUT)
    length = str(len(body)).encode()
    headers = [(b"content-length", str(len(length)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": length})


@pytest.fixture(autouse=True)
def limits() -> Iterator[None]:
    GuardedHttpToolsProtocol.limits = RequestLimits(TIMEOUT, max_headers=20, max_header_bytes=4096)
    yield
    GuardedHttpToolsProtocol.limits = None


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    async with served(slow_app, http=IMPORT_STRING, lifespan="off") as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        yield host, int(port)


async def exchange(server: tuple[str, int], *parts: bytes, pause: float = 0) -> tuple[bytes, float]:
    """Send `parts` with `pause` between them; everything read until the server closes, and
    how long after the first write the close came."""
    reader, writer = await asyncio.open_connection(*server)
    started = time.monotonic()
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    return answer, time.monotonic() - started


def problem_of(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    assert b"connection: close" in head.lower(), head
    return int(head.split()[1]), orjson.loads(body)


async def test_a_request_read_in_time_is_answered_however_long_the_app_takes(
    server: tuple[str, int],
) -> None:
    answer, _ = await exchange(
        server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.endswith(b"\r\n\r\n5")


async def test_a_connection_that_sends_nothing_is_cut_after_the_timeout(
    server: tuple[str, int],
) -> None:
    answer, took = await exchange(server)
    status, problem = problem_of(answer)
    assert status == 408
    assert problem["status"] == 408
    assert "REQUEST_READ_TIMEOUT_SECONDS" in problem["detail"]
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 3


async def test_headers_that_trickle_in_are_cut(server: tuple[str, int]) -> None:
    # A few bytes every 0.1 s, the head never complete: bytes arriving do not hold the clock.
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaa"
    answer, took = await exchange(server, *(head[n : n + 10] for n in range(0, 40, 10)), pause=0.1)
    assert problem_of(answer)[0] == 408
    assert TIMEOUT * 0.9 <= took < TIMEOUT + 3


async def test_a_body_that_stalls_is_cut(server: tuple[str, int]) -> None:
    answer, _ = await exchange(
        server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10
    )
    assert problem_of(answer)[0] == 408


async def test_each_request_on_a_kept_alive_connection_gets_the_clock_afresh(
    server: tuple[str, int],
) -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    reader, writer = await asyncio.open_connection(*server)
    try:
        for _ in range(2):  # each answered after 2 x TIMEOUT: the clock stopped at its end
            writer.write(request)
            await writer.drain()
            line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n2"), timeout=10)
            assert line.startswith(b"HTTP/1.1 200"), line
    finally:
        writer.close()


@pytest.mark.parametrize(
    "headers",
    [
        b"".join(b"X-H%d: v\r\n" % n for n in range(21)),  # one more than MAX_HEADERS
        b"X-Big: " + b"b" * 5000 + b"\r\n",  # past MAX_HEADER_BYTES in one
        b"".join(b"X-M%d: " % n + b"m" * 400 + b"\r\n" for n in range(12)),  # in all
    ],
    ids=["count", "one-large", "all-large"],
)
async def test_headers_past_the_bounds_are_a_431(server: tuple[str, int], headers: bytes) -> None:
    answer, took = await exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    status, problem = problem_of(answer)
    assert status == 431
    assert "MAX_HEADERS" in problem["detail"]
    assert took < TIMEOUT  # at once, not after the timeout


async def test_what_is_not_http_is_a_400_problem(server: tuple[str, int]) -> None:
    answer, _ = await exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert problem_of(answer)[0] == 400


def test_the_limits_come_from_the_settings() -> None:
    from common.settings import load_settings

    limits = RequestLimits.of(
        load_settings(request_read_timeout_seconds=7, max_headers=50, max_header_bytes=2048)
    )
    assert limits == RequestLimits(7, 50, 2048)
