"""The worker's HTTP port: a socket the worker binds before its event loop runs, served by
uvicorn (the API's server) inside that loop.

Bound by us and first, so that a port already taken stops the worker at start with one line
naming WORKER_HEALTH_PORT, as a bad setting does, instead of uvicorn's own exit later.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator

import uvicorn

from api.app import ASGIApp
from common.errors import ConfigurationError
from common.settings import Settings

logger = logging.getLogger(__name__)

_BACKLOG = 64
# An answer in progress when the worker stops gets this long (a probe asks again anyway).
_SHUTDOWN_GRACE_SECONDS = 1


def listen(settings: Settings) -> socket.socket:
    """A socket listening on WORKER_HEALTH_HOST:WORKER_HEALTH_PORT (0: any free port).
    ConfigurationError, one line naming the variable, when it cannot be had."""
    host, port = settings.worker_health_host, settings.worker_health_port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigurationError(
            f"WORKER_HEALTH_HOST: cannot listen on {host}: {exc.strerror}"
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a port left in TIME_WAIT by the last run is free, one that another
        # process listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise _refused(host, port, exc) from None
    sock.setblocking(False)
    return sock


def _refused(host: str, port: int, exc: OSError) -> ConfigurationError:
    if exc.errno == errno.EADDRINUSE:
        return ConfigurationError(f"WORKER_HEALTH_PORT: port {port} is already in use")
    if exc.errno == errno.EACCES:
        return ConfigurationError(f"WORKER_HEALTH_PORT: port {port} is not allowed: {exc.strerror}")
    return ConfigurationError(f"WORKER_HEALTH_HOST: cannot listen on {host}: {exc.strerror}")


class _InAnotherLoop(uvicorn.Server):
    """uvicorn in a loop it does not own: SIGTERM and SIGINT stay the worker's (main.py)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """Serves `app` on `sock` from `start()` until `close()`."""

    def __init__(self, app: ASGIApp, sock: socket.socket) -> None:
        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            log_config=None,
            # uvicorn's start and stop lines say nothing the worker's own do not; errors stay.
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            timeout_graceful_shutdown=_SHUTDOWN_GRACE_SECONDS,
        )
        self._server = _InAnotherLoop(config)
        self._socket = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        port: int = self._socket.getsockname()[1]
        return port

    def start(self) -> None:
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="health-port"
        )
        self._task.add_done_callback(_log_failure)
        host = self._socket.getsockname()[0]
        logger.info("health port open", extra={"host": host, "port": self.port})

    async def close(self) -> None:
        """Stop serving and close the socket (uvicorn closes it once it has stopped)."""
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):  # logged by _log_failure
            await self._task


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("health port failed", exc_info=exc)
