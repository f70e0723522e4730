"""Background upkeep of the API: expired idempotency keys, and throughput minutes older than a
day, are deleted in bounded batches."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

from common.ports import TaskRepository
from common.supervision import run_forever

logger = logging.getLogger(__name__)


async def run_key_purge(
    *, repository: TaskRepository, interval_seconds: float, batch_size: int
) -> NoReturn:
    """Forever: delete a batch of expired keys; at once again while batches come back full,
    so that a backlog goes in bounded steps without holding long locks."""
    await _purge_forever(
        repository.purge_idempotency_keys,
        what="expired idempotency keys",
        loop="idempotency key purge",
        interval_seconds=interval_seconds,
        batch_size=batch_size,
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
    await _purge_forever(
        repository.purge_throughput,
        what="old throughput minutes",
        loop="throughput purge",
        interval_seconds=interval_seconds,
        batch_size=batch_size,
    )


async def _purge_forever(
    purge: Callable[..., Awaitable[int]],
    *,
    what: str,
    loop: str,
    interval_seconds: float,
    batch_size: int,
) -> NoReturn:
    async def one_pass() -> float:
        deleted = await purge(limit=batch_size)
        if deleted:
            logger.info(f"{what} deleted", extra={"count": deleted})
        return 0.0 if deleted >= batch_size else interval_seconds

    await run_forever(one_pass, name=loop, max_backoff_seconds=max(interval_seconds, 5.0))
