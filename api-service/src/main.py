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
from api.routes import health_router, tasks_router
from common.broker import AmqpPublisher, BrokerLink, BrokerSession, TaskPublisher
from common.database import MySQLTaskRepository, close_pool, create_pool
from common.errors import ConfigurationError
from common.grouped import GroupedTaskRepository
from common.heap import freeze_startup_objects
from common.logs import configure_logging
from common.settings import Settings, load_settings
from common.topology import Topology
from services.dispatcher import run_dispatcher

logger = logging.getLogger("api")

DESCRIPTION = """
Accepts tasks over HTTP, stores them in MySQL and queues them on RabbitMQ for the worker.

Every error answer is an RFC 9457 problem (`application/problem+json`).
"""


@asynccontextmanager
async def backing_services(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
    """One MySQL pool, one AMQP connection (kept open by BrokerLink) and the dispatcher.

    Neither dependency has to be up at start: requests get a 503 (database) or are queued
    through the outbox (broker) until it is, and /health says which one is missing.
    """
    pool = await create_pool(settings)
    repository = GroupedTaskRepository(
        MySQLTaskRepository(pool, timeout=settings.database_timeout_seconds)
    )
    amqp = AmqpPublisher(timeout=settings.publish_timeout_seconds)
    topology = Topology.from_settings(settings)

    async def on_connect(session: BrokerSession) -> None:
        channel = await session.channel(publisher_confirms=True)
        await topology.declare(channel)
        amqp.attach(channel)

    link = BrokerLink(settings, name="task-api", on_connect=on_connect)
    link.start()
    await link.wait_connected(settings.publish_timeout_seconds)
    app.state.repository = repository
    app.state.publisher = publisher = TaskPublisher(amqp, queue=settings.task_queue)
    dispatcher = asyncio.create_task(
        run_dispatcher(
            repository=repository,
            publisher=publisher,
            interval_seconds=settings.dispatch_interval_seconds,
            min_age_seconds=settings.dispatch_min_age_seconds,
            batch_size=settings.dispatch_batch_size,
        )
    )
    freeze_startup_objects()
    logger.info("api started", extra={"queue": settings.task_queue, "broker": link.connected})
    try:
        yield
    finally:
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher
        await repository.flush_marks()
        await link.close()
        await close_pool(pool)
        logger.info("api stopped")


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app; its lifespan opens the connections (see `backing_services`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backing_services(settings, app):
            yield

    app = FastAPI(
        title="Task service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.include_router(tasks_router)
    app.include_router(health_router)
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
