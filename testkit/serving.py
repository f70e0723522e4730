"""An ASGI app under a real uvicorn in the test's own event loop, on a free loopback port:
for what httpx's ASGITransport cannot show (it answers once the app has finished, so an
endless event stream never arrives; it sends no server headers)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from testkit.polling import wait_until


@asynccontextmanager
async def served(app: Any, **options: Any) -> AsyncIterator[str]:
    """The base URL of `app` served by uvicorn with `options`, until the block ends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, **{"log_config": None, **options}))
    serving = asyncio.create_task(server.serve(sockets=[sock]))

    async def started() -> bool:
        return server.started

    try:
        await wait_until(started, timeout=10, interval=0.01, what="uvicorn")
        host, port = sock.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await serving
        sock.close()
