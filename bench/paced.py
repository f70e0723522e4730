"""An open-loop load generator: POSTs sent on a fixed schedule, whatever the answers do.

wrk waits for each answer before it sends the next request on a connection, so a slow server
slows the load down and hides its own latency. Here request i is due at start + i/rate and
goes out then (or as soon as the event loop's timer fires), whatever came back before; its
latency counts from then, including any wait for a connection, and a request that finds no
idle connection opens another one (up to a bound), as independent clients would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

_MAX_CONNECTIONS = 512
# A server this far behind the schedule cannot keep the rate: stop sending, say so.
_MAX_BACKLOG_SECONDS = 2.0
_TIMEOUT_SECONDS = 10.0
# uvicorn closes a keep-alive connection idle for 5 s; never reuse one idle for this long.
_STALE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Answer:
    sent_wall: float  # when the request was sent on schedule, in seconds since the epoch
    latency: float  # seconds from then to the whole answer read; inf when none came
    status: int  # 0 when no answer came
    body: bytes
    measured: bool  # False during the warm-up


@dataclass
class PacedResult:
    answers: list[Answer] = field(default_factory=list)
    seconds: float = 0.0
    fell_behind_after: float | None = None  # seconds into the run, when it stopped early

    @property
    def measured(self) -> list[Answer]:
        """The answers after the warm-up; all of them when the run stopped early."""
        if self.fell_behind_after is not None:
            return list(self.answers)
        return [answer for answer in self.answers if answer.measured]

    @property
    def ok(self) -> int:
        return sum(200 <= answer.status < 300 for answer in self.answers)

    @property
    def failed(self) -> int:
        return len(self.answers) - self.ok


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    async def exchange(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request, read one answer: (status, body, whether to keep the connection)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, keep = 0, True
        for line in head.lower().split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip() == b"close":
                keep = False
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not supported")
        return status, await self.reader.readexactly(length), keep

    def close(self) -> None:
        self.writer.close()


class _Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Connection] = []
        self.opened = 0
        self.freed = asyncio.Event()

    async def take(self) -> _Connection:
        while not self.idle and self.opened >= _MAX_CONNECTIONS:
            self.freed.clear()
            await self.freed.wait()
        stale = time.monotonic() - _STALE_SECONDS
        while self.idle and self.idle[0].last_used < stale:
            self.idle.pop(0).close()
            self.opened -= 1
        if self.idle:
            return self.idle.pop()
        self.opened += 1
        try:
            return _Connection(*await asyncio.open_connection(self.host, self.port))
        except BaseException:
            self.opened -= 1
            raise

    def give_back(self, connection: _Connection, *, keep: bool) -> None:
        if keep:
            connection.last_used = time.monotonic()
            self.idle.append(connection)
        else:
            connection.close()
            self.opened -= 1
        self.freed.set()

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def post_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _send(pool: _Pool, request: bytes) -> tuple[int, bytes]:
    connection = await pool.take()
    keep = False
    try:
        async with asyncio.timeout(_TIMEOUT_SECONDS):
            status, body, keep = await connection.exchange(request)
        return status, body
    finally:
        pool.give_back(connection, keep=keep)


async def run_paced(
    *, host: str, port: int, request: bytes, rate: float, warmup: float, seconds: float
) -> PacedResult:
    """Send `request` `rate` times a second for warmup + seconds; wait for every answer."""
    pool = _Pool(host, port)
    result = PacedResult(seconds=seconds)
    # time.monotonic(), not loop.time(): uvloop's loop clock counts whole milliseconds.
    start, start_wall = time.monotonic(), time.time()
    total = round((warmup + seconds) * rate)
    warmup_count = round(warmup * rate)

    async def one(index: int, sent: float) -> None:
        status, body, latency = 0, b"", float("inf")
        with contextlib.suppress(OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            status, body = await _send(pool, request)
            latency = time.monotonic() - sent
        result.answers.append(
            Answer(start_wall + (sent - start), latency, status, body, index >= warmup_count)
        )

    tasks: list[asyncio.Task[None]] = []
    try:
        for index in range(total):
            due = start + index / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            if len(tasks) - len(result.answers) > rate * _MAX_BACKLOG_SECONDS:
                result.fell_behind_after = time.monotonic() - start
                break
            # Timers fire up to a millisecond late: that slack is ours, not the server's.
            sent = max(due, time.monotonic())
            tasks.append(asyncio.create_task(one(index, sent)))
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        pool.close()
    return result
