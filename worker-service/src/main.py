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

from aio_pika.abc import AbstractQueue

from common.broker import AmqpPublisher, BrokerLink, BrokerSession
from common.database import MySQLTaskRepository, close_pool, create_pool
from common.errors import ConfigurationError
from common.grouped import GroupedTaskRepository
from common.heap import freeze_startup_objects
from common.logs import configure_logging
from common.settings import Settings, load_settings
from services.consumer import TaskConsumer
from services.retry_policy import RetryPolicy
from services.work import simulated_work

logger = logging.getLogger("worker")


class Subscription:
    """The consumer's registration on the current broker session, made again after every
    reconnect."""

    def __init__(
        self, settings: Settings, consumer: TaskConsumer, publisher: AmqpPublisher
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._publisher = publisher
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def on_connect(self, session: BrokerSession) -> None:
        channel = await session.channel()
        # The prefetch bounds the tasks in flight in this process.
        await channel.set_qos(prefetch_count=self._settings.worker_concurrency)
        queue = await self._consumer.policy.topology.declare(channel)
        self._publisher.attach(await session.channel(publisher_confirms=True))
        self._tag = await queue.consume(self._consumer.on_message)
        self._queue = queue

    async def cancel(self) -> None:
        """Take no new deliveries; those in flight go on."""
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)


async def _heartbeat(path: str, link: BrokerLink, interval: float = 5.0) -> None:
    """Touch `path` while the consumer is registered: the container's liveness signal."""
    while True:
        if link.connected:
            await asyncio.to_thread(Path(path).touch)
        await asyncio.sleep(interval)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Consume until `stop` is set, let in-flight tasks finish (within the grace), close."""
    pool = await create_pool(settings)
    publisher = AmqpPublisher(timeout=settings.publish_timeout_seconds)
    consumer = TaskConsumer(
        repository=GroupedTaskRepository(
            MySQLTaskRepository(pool, timeout=settings.database_timeout_seconds)
        ),
        work=simulated_work(
            settings.processing_delay_min_seconds,
            settings.processing_delay_max_seconds,
            settings.processing_failure_rate,
        ),
        policy=RetryPolicy.from_settings(settings),
        retry_publisher=publisher,
        lease_seconds=settings.task_lease_seconds,
        requeue_pause_seconds=settings.requeue_pause_seconds,
        unknown_task_max_lookups=settings.unknown_task_max_lookups,
    )
    subscription = Subscription(settings, consumer, publisher)
    link = BrokerLink(settings, name="task-worker", on_connect=subscription.on_connect)
    link.start()
    heartbeat = asyncio.create_task(_heartbeat(settings.worker_heartbeat_file, link))
    freeze_startup_objects()
    logger.info(
        "worker started",
        extra={"queue": settings.task_queue, "concurrency": settings.worker_concurrency},
    )
    try:
        await stop.wait()
        await subscription.cancel()
        logger.info("worker stopping", extra={"in_flight": consumer.in_flight})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settings.worker_shutdown_grace_seconds):
                await consumer.wait_idle()
        # Closing the connection hands whatever is still unacked back to the broker.
        if consumer.in_flight:
            logger.warning("requeueing unfinished tasks", extra={"in_flight": consumer.in_flight})
    finally:
        heartbeat.cancel()
        await link.close()
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
    asyncio.run(_main(settings))


if __name__ == "__main__":
    run()
