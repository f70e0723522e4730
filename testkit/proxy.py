"""A TCP proxy that stages a backend's faults in their real shapes, without stopping anything
on the machine.

    proxy.fault(Fault.BLACKHOLE)   # ... the fault lasts ...
    proxy.restore()                # and ends

It runs its own event loop in a thread, so it keeps forwarding while the test's loop is idle
(between tests, or while a test blocks).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Fault(enum.StrEnum):
    """How a backend fails, as a client sees it. Each also ends the connections already open
    in its own way (refused and closed: at once; reset: at their next bytes; black hole and
    slow: they stall)."""

    REFUSE = "refused"  # nothing listens: connecting is refused, open connections are reset
    CLOSE = "closed on accept"  # accepts, then closes before sending a byte
    HANDSHAKE = "closed in handshake"  # accepts, passes the first bytes of the greeting, closes
    RESET = "reset mid-stream"  # connections work, then are reset in the middle of a reply
    BLACKHOLE = "black hole"  # accepts and never answers a byte; open connections go silent
    SLOW = "slow"  # answers, but every chunk is held `slow_seconds` first (until it ends)


# How far into the server's bytes the handshake is cut; where in the server's bytes a reset
# lands: for an open connection, within its next reply; for a new one, anywhere from the
# greeting to the first replies after it.
_HANDSHAKE_BYTES = 7
_RESET_OPEN_WITHIN = 32
_RESET_NEW_WITHIN = 1024


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    reset_budget: int | None = None  # server bytes still forwarded before a reset

    def abort(self, *, reset: bool) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            if reset:
                _linger_zero(writer)  # RST, not FIN
                writer.transport.abort()
            else:
                writer.transport.close()


class TcpProxy:
    """Listens on 127.0.0.1:`port` and forwards to `target_host:target_port`, or fails in the
    shape of `fault(...)` until `restore()`."""

    def __init__(self, target_host: str, target_port: int, *, slow_seconds: float = 10.0) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.slow_seconds = slow_seconds
        self.connections_made = 0  # connections forwarded to the backend
        self.connections_refused = 0  # attempts that met a fault: proof that a client tried
        self.chunks_stalled = 0  # held by a black hole or slowed: proof that traffic met it
        self.current: Fault | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._healed: asyncio.Event | None = None  # set while no black hole holds the data
        self._quick: asyncio.Event | None = None  # set while the connection is not slow
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._random = random.Random(0)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    async def _listen(self) -> None:
        if self._healed is None or self._quick is None:
            self._healed, self._quick = asyncio.Event(), asyncio.Event()
            self._healed.set()
            self._quick.set()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(512)
        listener.setblocking(False)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = asyncio.create_task(self._accept_forever(listener))

    async def _stop_listening(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
        if self._listener is not None:
            self._listener.close()
        self._acceptor = self._listener = None

    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            if self.current is Fault.CLOSE:
                # At once, before asyncio wraps it: the client may not even have finished
                # setting up its own side of the connection.
                self.connections_refused += 1
                sock.close()
                continue
            task = asyncio.create_task(self._handle(sock))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    # -- faults ----------------------------------------------------------------------------

    def fault(self, shape: Fault) -> None:
        """Start failing in `shape` (after any earlier fault is restored)."""
        self._call(self._begin(shape))

    def cut(self) -> None:
        """The plainest outage: open connections are reset and new ones closed on accept."""
        self.fault(Fault.CLOSE)
        self._call(self._reset_all())

    def restore(self) -> None:
        self._call(self._end())

    async def _begin(self, shape: Fault) -> None:
        await self._end()
        assert self._healed is not None
        self.current = shape
        if shape is Fault.REFUSE:
            await self._stop_listening()
            await self._reset_all()
        elif shape in (Fault.CLOSE, Fault.HANDSHAKE):
            for link in list(self._links):
                link.abort(reset=False)
        elif shape is Fault.RESET:
            for link in self._links:
                link.reset_budget = self._random.randint(1, _RESET_OPEN_WITHIN)
        elif shape is Fault.BLACKHOLE:
            self._healed.clear()
        elif shape is Fault.SLOW:
            assert self._quick is not None
            self._quick.clear()

    async def _reset_all(self) -> None:
        for link in list(self._links):
            link.abort(reset=True)

    async def _end(self) -> None:
        assert self._healed is not None
        shape, self.current = self.current, None
        for link in self._links:
            link.reset_budget = None
        self._healed.set()
        assert self._quick is not None
        self._quick.set()
        if shape is Fault.REFUSE:
            await self._listen()

    # -- forwarding ------------------------------------------------------------------------

    async def _handle(self, sock: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=sock)
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._serve(link, reader)
        finally:
            self._links.discard(link)
            link.abort(reset=False)

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        assert self._healed is not None
        shape = self.current
        if shape is not None:
            self.connections_refused += 1
        if shape is Fault.BLACKHOLE:  # accepted; nothing happens until the hole closes
            await self._healed.wait()
        try:
            upstream_reader, link.upstream = await asyncio.open_connection(*self.target)
        except OSError:
            return
        self.connections_made += 1
        if shape is Fault.RESET:
            link.reset_budget = self._random.randint(1, _RESET_NEW_WITHIN)
        limit = _HANDSHAKE_BYTES if shape is Fault.HANDSHAKE else None
        await asyncio.gather(
            self._pipe(link, reader, link.upstream, from_server=False),
            self._pipe(link, upstream_reader, link.client, from_server=True, limit=limit),
        )

    async def _pipe(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        from_server: bool,
        limit: int | None = None,
    ) -> None:
        assert self._healed is not None
        with contextlib.suppress(OSError, RuntimeError):
            while data := await reader.read(65536):
                if self.current in (Fault.BLACKHOLE, Fault.SLOW):
                    self.chunks_stalled += 1
                await self._healed.wait()  # a black hole holds what it got
                if self.current is Fault.SLOW:
                    await self._held_while_slow()
                if limit is not None:
                    writer.write(data[:limit])
                    await writer.drain()
                    break
                if from_server and link.reset_budget is not None:
                    link.reset_budget -= len(data)
                    if link.reset_budget <= 0:
                        link.abort(reset=True)
                        return
                writer.write(data)
                await writer.drain()
        link.abort(reset=False)

    async def _held_while_slow(self) -> None:
        """`slow_seconds`, or less if the slowness ends first (what it held then flows)."""
        assert self._quick is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.slow_seconds):
                await self._quick.wait()

    def close(self) -> None:
        async def shutdown() -> None:
            assert self._healed is not None
            self._healed.set()
            await self._stop_listening()
            await self._reset_all()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@contextlib.contextmanager
def tcp_proxy(host: str, port: int, *, slow_seconds: float = 10.0) -> Iterator[TcpProxy]:
    proxy = TcpProxy(host, port, slow_seconds=slow_seconds).start()
    try:
        yield proxy
    finally:
        proxy.close()
