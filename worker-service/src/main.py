"""The worker service: `python main.py` (or `make worker`) consumes TASK_QUEUE until SIGTERM.

The shared package must be importable: PYTHONPATH holds the repository root.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from common.broker import connect_broker, declare_task_queue
from common.database import MySQLTaskRepository, close_pool, create_pool
from common.errors import ConfigurationError, DependencyUnavailable
from common.logs import configure_logging
from common.settings import Settings, load_settings
from services.consumer import TaskConsumer
from services.work import simulated_work

logger = logging.getLogger("worker")


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Consume until `stop` is set, then let in-flight tasks finish and close."""
    pool = await create_pool(settings)
    try:
        connection = await connect_broker(settings)
        try:
            channel = await connection.channel()
            # The prefetch bounds the tasks in flight in this process.
            await channel.set_qos(prefetch_count=settings.worker_concurrency)
            queue = await declare_task_queue(channel, settings)
            consumer = TaskConsumer(
                repository=MySQLTaskRepository(pool, timeout=settings.database_timeout_seconds),
                work=simulated_work(
                    settings.processing_delay_min_seconds, settings.processing_delay_max_seconds
                ),
                lease_seconds=settings.task_lease_seconds,
                requeue_pause_seconds=settings.requeue_pause_seconds,
            )
            tag = await queue.consume(consumer.on_message)
            logger.info(
                "worker started",
                extra={"queue": settings.task_queue, "concurrency": settings.worker_concurrency},
            )
            await stop.wait()
            # Take no new deliveries, but let the ones in flight finish and be acked.
            await queue.cancel(tag)
            logger.info("worker stopping", extra={"in_flight": consumer.in_flight})
            await consumer.wait_idle()
        finally:
            await connection.close()
    finally:
        await close_pool(pool)
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
    try:
        asyncio.run(_main(settings))
    except DependencyUnavailable as exc:
        logger.error("worker cannot start", extra={"error": str(exc)})
        sys.exit(1)


if __name__ == "__main__":
    run()
