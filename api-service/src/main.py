"""The API service: `python main.py` (or `make api`) serves it on API_HOST:API_PORT.

The shared package must be importable: PYTHONPATH holds the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.auth import install_api_keys
from api.dashboard import install_dashboard
from api.events import event_routes
from api.figures import figure_routes
from api.headers import ResponseHeaders, install_cors
from api.health import health_routes
from api.http_guard import IMPORT_STRING as HTTP_PROTOCOL
from api.http_guard import GuardedHttpToolsProtocol, RequestLimits
from api.metrics import ApiMetrics, install_metrics
from api.middleware import BodySizeLimit, UnhandledErrors
from api.openapi import install_openapi
from api.problems import install_problem_handlers
from api.rate_limit import install_rate_limit
from api.routes import StreamSlots, task_routes, task_type_routes
from api.swagger import install_swagger_ui
from api.tracing import install_tracing
from common.amqp import Broker, Signal
from common.errors import ConfigurationError, SchemaOutdated
from common.heap import freeze_startup_objects
from common.logs import configure_logging
from common.metrics import multiprocess_directory
from common.mysql import Database, grouped_repository
from common.mysql.outbox import outbox_backlog
from common.mysql.revision import check_schema_at_start, require_schema_revision
from common.notifying import NotifyingTaskRepository
from common.settings import Settings, load_settings
from common.tracing import start_tracing
from services.backends import Backends
from services.backpressure import Backpressure
from services.dispatcher import run_dispatcher
from services.events import EventHub
from services.housekeeping import run_key_purge, run_throughput_purge

logger = logging.getLogger("api")

DESCRIPTION = """
Accepts tasks over HTTP, stores them in MySQL and queues them on RabbitMQ for the worker.

Every error answer is an RFC 9457 problem (`application/problem+json`).
"""


@contextlib.contextmanager
def _streams_end_on_exit(events: EventHub) -> Iterator[None]:
    """On SIGTERM or SIGINT, end the event streams before uvicorn's own handler runs.

    uvicorn waits for open responses before it shuts down, and an event stream never ends
    by itself: without this, a stop waited API_SHUTDOWN_GRACE_SECONDS and then cut the
    streams with an error. Ended cleanly, their clients reconnect (with Last-Event-ID) to a
    process that is up. Chains uvicorn's handlers, installed before the lifespan starts;
    where there are none (the app under a test client) it does nothing.
    """
    loop = asyncio.get_running_loop()
    chained: dict[int, Callable[[int, FrameType | None], Any]] = {}
    if threading.current_thread() is threading.main_thread():
        for stop in (signal.SIGTERM, signal.SIGINT):
            handler = signal.getsignal(stop)
            if callable(handler):
                chained[stop] = handler

    def on_exit(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(events.close)
        chained[signum](signum, frame)

    for signum in chained:
        signal.signal(signum, on_exit)
    try:
        yield
    finally:
        for signum, handler in chained.items():
            signal.signal(signum, handler)


def connected_backends(settings: Settings, metrics: ApiMetrics | None = None) -> Backends:
    """MySQL, RabbitMQ (a link kept open in the background), the outbox dispatcher, the
    backlog's measure (backpressure and GET /api/queue) and the purges of expired
    idempotency keys and of throughput minutes a day old.

    Neither dependency has to be up at start: requests get a 503 (database) or are queued
    through the outbox (broker) until it is, and /health/ready says which one is missing.
    """
    database = Database(settings)
    grouped = grouped_repository(database)
    broker = Broker(settings, name="task-api")
    publisher = broker.publisher if metrics is None else metrics.metered(broker.publisher)
    # Each transition is broadcast to every API process, for its event streams.
    repository = NotifyingTaskRepository(
        grouped, lambda ids: broker.signals.send(Signal.CHANGED, ids)
    )
    # Bound to the broadcasts only while this process has event streams open.
    events = EventHub(demand=lambda wanted: broker.signals.want(Signal.CHANGED, wanted))
    broker.signals.listen(
        Signal.CHANGED, events.changed, on_listening=events.wake_all, on_demand=True
    )

    async def outbox_waiting() -> int:
        return (await outbox_backlog(database)).tasks

    # Measured with MAX_BACKLOG 0 (no bound) too: GET /api/queue shows the figures.
    pressure = Backpressure(
        settings.max_backlog, outbox=outbox_waiting, queue=broker.publisher.queue_depth
    )

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        await database.start()
        broker.start()
        await broker.wait_connected(settings.publish_timeout_seconds)
        background = [
            asyncio.create_task(
                run_dispatcher(
                    repository=repository,
                    publisher=publisher,
                    interval_seconds=settings.dispatch_interval_seconds,
                    min_age_seconds=settings.dispatch_min_age_seconds,
                    batch_size=settings.dispatch_batch_size,
                ),
                name="outbox-dispatcher",
            ),
            asyncio.create_task(
                run_key_purge(
                    repository=repository,
                    interval_seconds=settings.idempotency_purge_interval_seconds,
                    batch_size=settings.idempotency_purge_batch,
                ),
                name="idempotency-key-purge",
            ),
            asyncio.create_task(
                run_throughput_purge(repository=repository), name="throughput-purge"
            ),
            asyncio.create_task(
                pressure.watch(interval_seconds=settings.dispatch_interval_seconds),
                name="backpressure",
            ),
        ]
        freeze_startup_objects()
        logger.info("api started", extra={"queue": settings.task_queue, "broker": broker.connected})
        try:
            with _streams_end_on_exit(events):
                yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await grouped.flush_marks()
            await broker.close()
            await database.close()
            logger.info("api stopped")

    return Backends(
        repository=repository,
        publisher=publisher,
        broadcast_cancel=lambda ids: broker.signals.send(Signal.CANCEL, ids),
        events=events,
        require_schema=lambda: require_schema_revision(database),
        outbox_backlog=lambda: outbox_backlog(database),
        pressure=pressure,
        running=running,
    )


def create_app(settings: Settings, backends: Backends | None = None) -> FastAPI:
    """The ASGI app, talking to `backends` (by default the real ones, opened by its lifespan)."""
    metrics = ApiMetrics() if settings.metrics_enabled else None
    backends = backends or connected_backends(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backends.running():
            yield

    app = FastAPI(
        title="Task service",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # ours, with its files shipped here (api/swagger.py); no ReDoc
        redoc_url=None,
    )
    # One bound on a tenant's open streams, of one task's events or of all its tasks'.
    streams = StreamSlots(settings.max_streams_per_tenant)
    # Before task_routes: /api/tasks/throughput is not a task id.
    app.include_router(figure_routes(backends))
    app.include_router(task_routes(backends, settings, streams, metrics))
    app.include_router(event_routes(backends, settings, streams, metrics))
    app.include_router(task_type_routes(settings))
    app.include_router(health_routes(backends))
    install_problem_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    install_openapi(app)
    install_swagger_ui(app)
    install_dashboard(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_rate_limit(app, settings)  # inside the keys, which name the caller
    install_api_keys(app, settings)
    install_cors(app, settings)  # outside the keys: a preflight carries none
    app.add_middleware(UnhandledErrors)  # outside the layers above: their errors are its 500s
    app.add_middleware(ResponseHeaders)  # outside even that: its 500s carry them too
    if metrics is not None:  # outside UnhandledErrors, to count its 500s
        install_metrics(app, metrics, backends.outbox_backlog)
    install_tracing(app)  # outside even that: the request's ids are on its 500s too
    return app


def create_app_from_environment() -> FastAPI:
    """The factory each process calls when API_WORKERS > 1."""
    settings = load_settings()
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    start_tracing(settings, service="task-api")
    return create_app(settings)


def run() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"api: {exc}")
    configure_logging(service="api", level=settings.log_level, fmt=settings.log_format)
    # An outdated schema is refused here, in one line, not in the lifespan (where uvicorn
    # would print a traceback); a database that is down is only logged.
    try:
        asyncio.run(check_schema_at_start(settings))
    except SchemaOutdated as exc:
        sys.exit(f"api: {exc}")
    # Several processes share the port; each has its own pool, connection and dispatcher
    # (and its tracing, started by the factory).
    if settings.api_workers == 1:
        start_tracing(settings, service="task-api")
    app: FastAPI | str = (
        create_app(settings) if settings.api_workers == 1 else "main:create_app_from_environment"
    )
    # Several processes write their metrics to one directory, made before they start (each
    # picks its metrics' storage as it imports prometheus-client).
    with (
        multiprocess_directory()
        if settings.api_workers > 1 and settings.metrics_enabled
        else contextlib.nullcontext()
    ):
        _serve(settings, app)


def _serve(settings: Settings, app: FastAPI | str) -> None:
    GuardedHttpToolsProtocol.limits = RequestLimits.of(settings)
    uvicorn.run(
        app,
        factory=settings.api_workers > 1,
        workers=settings.api_workers,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        # httptools, with the read timeout and header bounds it lacks (api/http_guard.py).
        http=HTTP_PROTOCOL,
        server_header=False,  # no "server: uvicorn" (nor a version) on every answer
        # On SIGTERM: no new connections, and the requests in flight get this long to finish.
        timeout_graceful_shutdown=settings.api_shutdown_grace_seconds,
    )


if __name__ == "__main__":
    run()
