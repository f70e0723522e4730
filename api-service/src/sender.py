"""The webhook sender: `python sender.py` (or `make webhook-sender`) sends the completion
webhooks of the tasks that reached a final state, until SIGTERM.

A process of its own, not a task of the API or the worker: a receiver that is slow or hostile
holds only this process's connections, never an API request or a worker's slot; it is the
only process that needs to reach the outside network (an egress rule can say so); and it
scales on its own (any number of senders share the outbox). It is built from the API's code,
so the body it sends is the API's own rendering of the task, the same JSON as GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import uvloop

from common.errors import ConfigurationError, SchemaOutdated
from common.logs import configure_logging
from common.mysql import Database, MySQLTaskRepository
from common.mysql.revision import check_schema_at_start
from common.mysql.webhooks import MySQLWebhookOutbox
from common.settings import Settings, load_settings
from services.webhooks.delivery import HttpPoster
from services.webhooks.sender import RetryPolicy, WebhookSender
from services.webhooks.signing import Signer

logger = logging.getLogger("webhook-sender")


async def run_sender(settings: Settings, stop: asyncio.Event) -> None:
    """Send until `stop` is set, let the attempts in flight end, close."""
    if settings.webhook_secret is None:
        raise ConfigurationError("WEBHOOK_SECRET must be set to send webhooks")
    previous = settings.webhook_secret_previous
    database = Database(settings)
    poster = HttpPoster(
        allowed_hosts=settings.webhook_hosts,
        timeout_seconds=settings.webhook_timeout_seconds,
        max_connections=settings.webhook_concurrency,
    )
    sender = WebhookSender(
        outbox=MySQLWebhookOutbox(database),
        tasks=MySQLTaskRepository(database),
        poster=poster,
        signer=Signer(
            settings.webhook_secret.get_secret_value(),
            None if previous is None else previous.get_secret_value(),
        ),
        policy=RetryPolicy(
            base_seconds=settings.webhook_retry_base_seconds,
            max_seconds=settings.webhook_retry_max_seconds,
            max_attempts=settings.webhook_max_attempts,
        ),
        timeout_seconds=settings.webhook_timeout_seconds,
        concurrency=settings.webhook_concurrency,
        poll_interval_seconds=settings.webhook_poll_interval_seconds,
    )
    await database.start()
    running = asyncio.get_running_loop().create_task(sender.run(), name="webhook-sender")
    logger.info(
        "webhook sender started",
        extra={
            "concurrency": settings.webhook_concurrency,
            "allowed": sorted(settings.webhook_hosts),
        },
    )
    try:
        await stop.wait()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await sender.stop()
        await poster.close()
        await database.close()
        logger.info("webhook sender stopped")


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run_sender(settings, stop)


def run() -> None:
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"webhook-sender: {exc}")
    if settings.webhook_secret is None:
        # Not a failure: webhooks are off, and the API refuses callback URLs meanwhile.
        print(
            "webhook-sender: WEBHOOK_SECRET is not set, so webhooks are off; nothing to send"
            " (make webhook-secret prints one)",
            file=sys.stderr,
        )
        return
    configure_logging(service="webhook-sender", level=settings.log_level, fmt=settings.log_format)
    try:
        uvloop.run(check_schema_at_start(settings))
    except SchemaOutdated as exc:
        sys.exit(f"webhook-sender: {exc}")
    uvloop.run(_main(settings))


if __name__ == "__main__":
    run()
