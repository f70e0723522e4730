"""The worker service: `python main.py` (or `make worker`) consumes TASK_QUEUE until SIGTERM.

The shared package must be importable: PYTHONPATH holds the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvloop

from api.app import RouteTable
from api.health import health_routes
from api.metrics import metrics_route
from api.server import HttpServer, listen
from common.amqp import Broker, Signal
from common.errors import ConfigurationError
from common.heap import freeze_startup_objects
from common.logs import configure_logging
from common.mysql import Database, grouped_repository
from common.mysql.revision import check_schema_at_start
from common.notifying import NotifyingTaskRepository
from common.ports import TaskRepository
from common.settings import Settings, load_settings
from common.task_types import CATALOGUE
from common.tracing import start_tracing
from handlers import load_handlers
from handlers.context import RunInProcess
from services.consumer import TaskConsumer
from services.cpu_pool import CpuPool
from services.health import check_readiness
from services.metrics import WorkerMetrics, watch_broker
from services.processor import Handlers
from services.retry_policy import RetryPolicy

logger = logging.getLogger("worker")


def _health_port(
    sock: socket.socket,
    broker: Broker,
    repository: TaskRepository,
    metrics: WorkerMetrics | None = None,
) -> HttpServer:
    """GET /health/live and /health/ready on `sock`: a table of routes (api.app), where
    another route (/metrics) is one more entry."""
    routes = health_routes(
        readiness=lambda: check_readiness(
            consuming=lambda: broker.consuming, repository=repository, publisher=broker.publisher
        )
    )
    if metrics is not None:
        routes["/metrics"] = metrics_route(metrics)
    return HttpServer(RouteTable(routes), sock)


def _started_on_first_use(pool: CpuPool) -> RunInProcess:
    """The pool's `run`, starting its processes for the first CPU-bound task: a worker that
    never gets one never pays for them."""
    starting: asyncio.Future[None] | None = None

    async def run(function: Callable[..., Any], *args: Any, **options: Any) -> Any:
        nonlocal starting
        if starting is None:
            starting = asyncio.ensure_future(pool.start())
        await asyncio.shield(starting)
        return await pool.run(function, *args, **options)

    return run


async def run_worker(
    settings: Settings, stop: asyncio.Event, health_socket: socket.socket | None = None
) -> None:
    """Consume until `stop` is set, let in-flight tasks finish (within the grace), close.
    The health port serves on `health_socket` (`run()` binds it; bound here when None)."""
    database = Database(settings)
    broker = Broker(settings, name="task-worker")
    # Each transition is broadcast to the API processes, for their event streams.
    repository = NotifyingTaskRepository(
        grouped_repository(database), lambda ids: broker.signals.send(Signal.CHANGED, ids)
    )
    cpu_pool = CpuPool(settings.cpu_pool_size or os.cpu_count() or 1)
    metrics = WorkerMetrics() if settings.metrics_enabled else None
    consumer = TaskConsumer(
        repository=repository,
        handlers=Handlers(
            load_handlers(CATALOGUE), settings, run_in_process=_started_on_first_use(cpu_pool)
        ),
        policy=RetryPolicy.from_settings(settings),
        publisher=broker.publisher,
        lease_seconds=settings.task_lease_seconds,
        requeue_pause_seconds=settings.requeue_pause_seconds,
        unknown_task_max_lookups=settings.unknown_task_max_lookups,
        unknown_type_max_attempts=settings.unknown_type_max_attempts,
        metrics=metrics,
    )
    if metrics is not None:
        metrics.count_in_flight(lambda: consumer.in_flight)
    broker.consume(consumer.on_delivery, prefetch=settings.worker_concurrency)
    broker.signals.listen(
        Signal.CANCEL,
        consumer.running.cancel,
        on_listening=lambda: consumer.running.catch_up(repository),
    )
    health_port = _health_port(health_socket or listen(settings), broker, repository, metrics)
    await database.start()
    broker.start()
    health_port.start()
    watching = (
        None
        if metrics is None
        else asyncio.create_task(watch_broker(metrics, lambda: broker.connected), name="metrics")
    )
    freeze_startup_objects()
    logger.info(
        "worker started",
        extra={"queue": settings.task_queue, "concurrency": settings.worker_concurrency},
    )
    try:
        await stop.wait()
        await broker.stop_consuming()
        logger.info("worker stopping", extra={"in_flight": consumer.in_flight})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.worker_shutdown_grace_seconds):
                await consumer.wait_idle()
        # Closing the connection hands whatever is still unacked back to the broker.
        if consumer.in_flight:
            logger.warning("requeueing unfinished tasks", extra={"in_flight": consumer.in_flight})
    finally:
        if watching is not None:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        await cpu_pool.close()
        await broker.close()
        await database.close()
        await health_port.close()
    logger.info("worker stopped")


async def _main(settings: Settings, health_socket: socket.socket) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_worker(settings, stop, health_socket)


def run() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"worker: {exc}")
    configure_logging(service="worker", level=settings.log_level, fmt=settings.log_format)
    start_tracing(settings, service="task-worker")
    # A health port that is taken, or an outdated schema, is refused in one line (both are
    # ConfigurationErrors); a database that is down is only logged.
    # uvloop, as the API runs under uvicorn: timers, sockets and callbacks cost less than on
    # asyncio's own loop, and every delivery has some of each.
    try:
        health_socket = listen(settings)
        uvloop.run(check_schema_at_start(settings))
    except ConfigurationError as exc:
        sys.exit(f"worker: {exc}")
    uvloop.run(_main(settings, health_socket))


if __name__ == "__main__":
    run()
