"""`python redrive.py [--limit N]` (or `make redrive`): move dead-lettered task messages
back to the work queue, resetting FAILED tasks to PENDING with a fresh attempt budget.

Poison messages (not a task message, or a task that does not exist) stay in the DLQ.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from common.broker import connect
from common.database import MySQLTaskRepository, close_pool, create_pool
from common.errors import ConfigurationError
from common.logs import configure_logging
from common.settings import Settings, load_settings
from common.topology import Topology
from services.redrive import RedriveReport, redrive_dead_letters


async def redrive(settings: Settings, limit: int) -> RedriveReport:
    pool = await create_pool(settings)
    connection = await connect(settings, name="task-redrive")
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = Topology.from_settings(settings)
        await topology.declare(channel)
        return await redrive_dead_letters(
            channel=channel,
            repository=MySQLTaskRepository(pool, timeout=settings.database_timeout_seconds),
            topology=topology,
            limit=limit,
        )
    finally:
        await connection.close()
        await close_pool(pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=10_000, help="messages to look at at most")
    args = parser.parse_args()
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        sys.exit(f"redrive: {exc}")
    configure_logging(service="redrive", level=settings.log_level, fmt=settings.log_format)
    report = asyncio.run(redrive(settings, args.limit))
    sys.stdout.write(
        f"moved {report.moved}, dropped {report.dropped} (already completed),"
        f" kept {report.kept} (poison)\n"
    )


if __name__ == "__main__":
    main()
