"""`python redrive.py [--limit N]` (or `make redrive`): move dead-lettered task messages
back to the work queue, resetting FAILED tasks to PENDING with a fresh attempt budget.

Poison messages (not a task message, or a task that does not exist) stay in the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.amqp import Broker
from common.errors import BrokerUnavailable, ConfigurationError, DependencyUnavailable
from common.logs import configure_logging
from common.mysql import Database, MySQLTaskRepository
from common.settings import Settings, load_settings
from services.redrive import RedriveReport, redrive_dead_letters


async def redrive(settings: Settings, limit: int) -> RedriveReport:
    database = Database(settings)
    broker = Broker(settings, name="task-redrive")
    await database.start()
    broker.start()
    try:
        if not await broker.wait_connected(settings.publish_timeout_seconds):
            raise BrokerUnavailable("RabbitMQ: not reachable within PUBLISH_TIMEOUT_SECONDS")
        return await redrive_dead_letters(
            letters=await broker.dead_letters(),
            publisher=broker.publisher,
            repository=MySQLTaskRepository(database),
            limit=limit,
        )
    finally:
        await broker.close()
        await database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10_000, help="messages to look at at most")
    args = parser.parse_args()
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"redrive: {exc}")
    configure_logging(service="redrive", level=settings.log_level, fmt=settings.log_format)
    try:
        report = asyncio.run(redrive(settings, args.limit))
    except DependencyUnavailable as exc:
        sys.exit(
            f"redrive: the {exc.component} is unavailable ({exc}); nothing was lost, run it again"
        )
    sys.stdout.write(
        f"moved {report.moved}, dropped {report.dropped} (already completed),"
        f" kept {report.kept} (poison)\n"
    )


if __name__ == "__main__":
    main()
