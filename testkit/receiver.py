"""A real HTTP receiver of webhooks for the tests and the bench: an asyncio server on
127.0.0.1 (h11 for the protocol, so that it can also hang or drop a connection, which an ASGI
app cannot), recording every request and answering each from a script.

    async with receiving() as receiver:
        receiver.script(Answer(500), Answer(429, headers={"retry-after": "2"}))
        ...  # the third request and later ones get the default answer, a 204
        first, second, third = await receiver.wait_for(3, timeout=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11

from testkit.polling import wait_until

_READ_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class Answer:
    """How the receiver answers one request: `status` with `headers` and `body`, after
    `delay` seconds and once `hold` is set (when given); or, with `hang`, never (the
    connection stays open until the client gives up); or, with `close`, not at all (the
    connection is closed at once). With `stall`, the body is announced a thousand times as
    long as it is, and the rest never comes."""

    status: int = 204
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    hold: asyncio.Event | None = None
    hang: bool = False
    close: bool = False
    stall: bool = False


@dataclass(frozen=True, slots=True)
class Received:
    """One request as it arrived: header names in lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when its last byte arrived
    wall: float  # time.time() then

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, default: Answer) -> None:
        self.default = default
        self.requests: list[Received] = []
        self.port = 0
        self.answered = 0  # answers sent whole
        self.last_answered_at = 0.0  # time.monotonic() when the latest one was
        self._script: deque[Answer] = deque()
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with `answers`, in order (then with the default)."""
        self._script.extend(answers)

    async def wait_for(self, count: int, *, timeout: float) -> list[Received]:
        """The first `count` requests, once that many have arrived (AssertionError at the
        deadline)."""

        async def arrived() -> list[Received] | None:
            return self.requests[:count] if len(self.requests) >= count else None

        return await wait_until(
            arrived, timeout=timeout, interval=0.01, what=f"{count} requests at the receiver"
        )

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: its requests one after the other, until either side closes it."""
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        connection = h11.Connection(h11.SERVER)
        try:
            while await self._exchange(connection, reader, writer):
                connection.start_next_cycle()
        except (h11.ProtocolError, ConnectionError):
            pass  # the client went away, or spoke something other than HTTP/1.1
        except asyncio.CancelledError:
            # The receiver is closing (close_connections). Ended, not cancelled: asyncio's
            # stream server logs a cancelled connection task as an error.
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _exchange(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request, record it, answer it; whether the connection may carry another."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(_READ_BYTES))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed (or PAUSED, which a server never sees before its answer)
                return False
        assert request is not None
        self.requests.append(
            Received(
                method=request.method.decode(),
                path=request.target.decode(),
                headers={name.decode(): value.decode() for name, value in request.headers},
                body=bytes(body),
                at=time.monotonic(),
                wall=time.time(),
            )
        )
        answer = self._script.popleft() if self._script else self.default
        if not await self._wait(answer, reader):
            return False
        length = len(answer.body) * (1000 if answer.stall else 1)
        headers = [*answer.headers.items(), ("content-length", str(length))]
        response = h11.Response(status_code=answer.status, headers=headers)
        for event in (response, h11.Data(data=answer.body)):
            writer.write(connection.send(event) or b"")
        await writer.drain()
        if answer.stall:
            await _until_closed(reader)
            return False
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        self.answered += 1
        self.last_answered_at = time.monotonic()
        return connection.our_state is h11.DONE and connection.their_state is h11.DONE

    async def _wait(self, answer: Answer, reader: asyncio.StreamReader) -> bool:
        """Until the answer may go; False if it never does (hang or close)."""
        if answer.close:
            return False
        if answer.hang:
            await _until_closed(reader)
            return False
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.hold is not None:
            await answer.hold.wait()
        return True

    async def close_connections(self) -> None:
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)


async def _until_closed(reader: asyncio.StreamReader) -> None:
    while await reader.read(_READ_BYTES):
        pass


@asynccontextmanager
async def receiving(port: int = 0, default: Answer | None = None) -> AsyncIterator[Receiver]:
    """A receiver listening on 127.0.0.1:`port` (0: a free one) until the block ends."""
    receiver = Receiver(default or Answer())
    server = await asyncio.start_server(receiver.serve, "127.0.0.1", port, backlog=1024)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        server.close()
        await receiver.close_connections()
        await server.wait_closed()
