"""`simulated`: the spec's work, a random pause of PROCESSING_DELAY_MIN/MAX_SECONDS that
never blocks the event loop, failing for a share PROCESSING_FAILURE_RATE of attempts."""

from __future__ import annotations

import asyncio
import random

from common.task_types import SimulatedPayload
from handlers.context import TaskContext


class SimulatedFailure(Exception):
    """Raised for a share PROCESSING_FAILURE_RATE of attempts."""


async def handle(ctx: TaskContext[SimulatedPayload]) -> None:
    settings = ctx.settings
    low, high = settings.processing_delay_min_seconds, settings.processing_delay_max_seconds
    await asyncio.sleep(random.uniform(low, high))
    # Decided by chance alone: nothing in a task can make it fail.
    if settings.processing_failure_rate and random.random() < settings.processing_failure_rate:
        raise SimulatedFailure("simulated failure (PROCESSING_FAILURE_RATE)")
