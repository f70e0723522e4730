"""Background upkeep of the API: expired idempotency keys are deleted in bounded batches."""

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
