"""The API service: `python main.py` (or `make api`) serves it on API_HOST:API_PORT.

The shared package must be importable: PYTHONPATH holds the repository root.
"""

from __future__ import annotations

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
from common.broker import AmqpTaskPublisher, connect_broker
from common.database import MySQLTaskRepository, close_pool, create_pool
from common.errors import ConfigurationError
from common.logs import configure_logging
from common.settings import Settings, load_settings

logger = logging.getLogger("api")

DESCRIPTION = """
Accepts tasks over HTTP, stores them in MySQL and queues them on RabbitMQ for the worker.

Every error answer is an RFC 9457 problem (`application/problem+json`).
"""


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app. Its lifespan opens one MySQL pool and one AMQP connection + channel."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        try:
            connection = await connect_broker(settings)
            try:
                app.state.repository = MySQLTaskRepository(
                    pool, timeout=settings.database_timeout_seconds
                )
                app.state.publisher = await AmqpTaskPublisher.open(connection, settings)
                logger.info("api started", extra={"queue": settings.task_queue})
                yield
            finally:
                await connection.close()
        finally:
            await close_pool(pool)
            logger.info("api stopped")

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


def run() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"api: {exc}")
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


if __name__ == "__main__":
    run()
