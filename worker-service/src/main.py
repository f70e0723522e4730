"""The worker service: `python main.py` (or `make worker`) consumes TASK_QUEUE until SIGTERM.

The shared package must be importable: PYTHONPATH holds the repository root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

from common.amqp import Broker, Signal
from common.errors import ConfigurationError, SchemaOutdated
from common.heap import freeze_startup_objects
from common.logs import configure_logging
from common.mysql import Database, grouped_repository
from common.mysql.revision import check_schema_at_start
from common.notifying import NotifyingTaskRepository
from common.settings import Settings, load_settings
from common.supervision import run_forever
from services.consumer import TaskConsumer
from services.retry_policy import RetryPolicy
from services.work import simulated_work

logger = logging.getLogger("worker")

_HEARTBEAT_SECONDS = 5.0


async def _heartbeat(path: str, broker: Broker) -> None:
    """Touch `path` while the consumer is registered: the container's liveness signal."""

    async def beat() -> float:
        if broker.connected:
            await asyncio.to_thread(Path(path).touch)
        return _HEARTBEAT_SECONDS

    await run_forever(beat, name="heartbeat", max_backoff_seconds=_HEARTBEAT_SECONDS)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Consume until `stop` is set, let in-flight tasks finish (within the grace), close."""
    database = Database(settings)
    broker = Broker(settings, name="task-worker")
    # Each transition is broadcast to the API processes, for their event streams.
    repository = NotifyingTaskRepository(
        grouped_repository(database), lambda ids: broker.signals.send(Signal.CHANGED, ids)
    )
    consumer = TaskConsumer(
        repository=repository,
        work=simulated_work(
            settings.processing_delay_min_seconds,
            settings.processing_delay_max_seconds,
            settings.processing_failure_rate,
        ),
        policy=RetryPolicy.from_settings(settings),
        publisher=broker.publisher,
        lease_seconds=settings.task_lease_seconds,
        requeue_pause_seconds=settings.requeue_pause_seconds,
        unknown_task_max_lookups=settings.unknown_task_max_lookups,
    )
    broker.consume(consumer.on_delivery, prefetch=settings.worker_concurrency)
    broker.signals.listen(
        Signal.CANCEL,
        consumer.running.cancel,
        on_listening=lambda: consumer.running.catch_up(repository),
    )
    await database.start()
    broker.start()
    heartbeat = asyncio.create_task(_heartbeat(settings.worker_heartbeat_file, broker))
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
        heartbeat.cancel()
        await broker.close()
        await database.close()
    logger.info("worker stopped")


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_worker(settings, stop)


def run() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"worker: {exc}")
    configure_logging(service="worker", level=settings.log_level, fmt=settings.log_format)
    # An outdated schema is refused in one line; a database that is down is only logged.
    try:
        asyncio.run(check_schema_at_start(settings))
    except SchemaOutdated as exc:
        sys.exit(f"worker: {exc}")
    asyncio.run(_main(settings))


if __name__ == "__main__":
    run()
