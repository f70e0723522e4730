"""The API service: `python main.py` (or `make api`) serves it on API_HOST:API_PORT.

The shared package must be importable: PYTHONPATH holds the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from api.middleware import BodySizeLimit, UnhandledErrors
from api.openapi import install_openapi
from api.problems import install_problem_handlers
from api.routes import health_routes, task_routes
from common.amqp import Broker
from common.errors import ConfigurationError
from common.heap import freeze_startup_objects
from common.logs import configure_logging
from common.mysql import Database, grouped_repository
from common.settings import Settings, load_settings
from services.backends import Backends
from services.dispatcher import run_dispatcher

logger = logging.getLogger("api")

DESCRIPTION = """
Accepts tasks over HTTP, stores them in MySQL and queues them on RabbitMQ for the worker.

Every error answer is an RFC 9457 problem (`application/problem+json`).
"""


def connected_backends(settings: Settings) -> Backends:
    """MySQL, RabbitMQ (a link kept open in the background) and the outbox dispatcher.

    Neither dependency has to be up at start: requests get a 503 (database) or are queued
    through the outbox (broker) until it is, and /health says which one is missing.
    """
    database = Database(settings)
    repository = grouped_repository(database)
    broker = Broker(settings, name="task-api")

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await database.start()
        broker.start()
        await broker.wait_connected(settings.publish_timeout_seconds)
        dispatcher = asyncio.create_task(
            run_dispatcher(
                repository=repository,
                publisher=broker.publisher,
                interval_seconds=settings.dispatch_interval_seconds,
                min_age_seconds=settings.dispatch_min_age_seconds,
                batch_size=settings.dispatch_batch_size,
            ),
            name="outbox-dispatcher",
        )
        freeze_startup_objects()
        logger.info("api started", extra={"queue": settings.task_queue, "broker": broker.connected})
        try:
            yield
        finally:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
            await repository.flush_marks()
            await broker.close()
            await database.close()
            logger.info("api stopped")

    return Backends(repository=repository, publisher=broker.publisher, running=running)


def create_app(settings: Settings, backends: Backends | None = None) -> FastAPI:
    """The ASGI app, talking to `backends` (by default the real ones, opened by its lifespan)."""
    backends = backends or connected_backends(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backends.running():
            yield

    app = FastAPI(
        title="Task service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(task_routes(backends))
    app.include_router(health_routes(backends))
    install_problem_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    install_openapi(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(UnhandledErrors)  # added last, so it wraps everything above
    return app


def create_app_from_environment() -> FastAPI:
    """The factory each process calls when API_WORKERS > 1."""
    settings = load_settings()
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    return create_app(settings)


def run() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"api: {exc}")
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    # Several processes share the port; each has its own pool, connection and dispatcher.
    app: FastAPI | str = (
        create_app(settings) if settings.api_workers == 1 else "main:create_app_from_environment"
    )
    uvicorn.run(
        app,
        factory=settings.api_workers > 1,
        workers=settings.api_workers,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        # On SIGTERM: no new connections, and the requests in flight get this long to finish.
        timeout_graceful_shutdown=settings.api_shutdown_grace_seconds,
    )


if __name__ == "__main__":
    run()
