"""Background upkeep of the API: expired idempotency keys, and throughput minutes older than a
day, are deleted in bounded batches."""

from __future__ import annotations

import logging
from typing import NoReturn

from common.ports import TaskRepository
from common.supervision import run_forever

logger = logging.getLogger(__name__)


async def run_key_purge(
    *, repository: TaskRepository, interval_seconds: float, batch_size: int
) -> NoReturn:
    """Forever: delete a batch of expired keys; at once again while batches come back full,
    so that a backlog goes in bounded steps without holding long locks."""

    async def one_pass() -> float:
        deleted = await repository.purge_idempotency_keys(limit=batch_size)
        if deleted:
            logger.info("expired idempotency keys deleted", extra={"count": deleted})
        return 0.0 if deleted >= batch_size else interval_seconds

    await run_forever(
        one_pass, name="idempotency key purge", max_backoff_seconds=max(interval_seconds, 5.0)
    )


# Minutes a day old go once a minute: the table holds at most a day and a minute of them.
THROUGHPUT_PURGE_INTERVAL_SECONDS = 60.0
THROUGHPUT_PURGE_BATCH = 1000


async def run_throughput_purge(
    *,
    repository: TaskRepository,
    interval_seconds: float = THROUGHPUT_PURGE_INTERVAL_SECONDS,
    batch_size: int = THROUGHPUT_PURGE_BATCH,
) -> NoReturn:
    """Forever: delete a batch of throughput rows older than a day, as the key purge does
    (at once again while batches come back full)."""

    async def one_pass() -> float:
        deleted = await repository.purge_throughput(limit=batch_size)
        if deleted:
            logger.info("old throughput minutes deleted", extra={"count": deleted})
        return 0.0 if deleted >= batch_size else interval_seconds

    await run_forever(
        one_pass, name="throughput purge", max_backoff_seconds=max(interval_seconds, 5.0)
    )
