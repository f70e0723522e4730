"""Long-lived loops that outlive any failure of one pass.

The broker link, the outbox dispatcher and the purge of expired idempotency keys each run one
pass after another through `run_forever`. A pass that raises ends only that pass: an expected failure (a
backend is unavailable) is logged as a warning, anything else at error with its traceback,
and the next pass starts a backoff after the failed one started, the backoff growing with each
failure in a row (so a pass that failed by waiting out a timeout is tried again at once).
`CancelledError` is no failure: it stops the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn

from common.errors import DependencyUnavailable

logger = logging.getLogger(__name__)

_FIRST_BACKOFF_SECONDS = 0.1


def backoff_seconds(failures: int, *, cap: float) -> float:
    """The pause after `failures` failures in a row: doubling from 0.1 s up to `cap`, with
    jitter (each pause a random 50-100% of that), so that replicas do not retry in step."""
    ceiling = min(_FIRST_BACKOFF_SECONDS * 2.0 ** max(failures - 1, 0), cap)
    return ceiling * random.uniform(0.5, 1.0)


async def run_forever(
    one_pass: Callable[[], Awaitable[float]], *, name: str, max_backoff_seconds: float
) -> NoReturn:
    """Call `one_pass` forever; it returns how long to pause before the next pass."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            pause = await one_pass()
        except DependencyUnavailable as exc:
            failures += 1
            pause = _after(started, backoff_seconds(failures, cap=max_backoff_seconds))
            logger.warning(
                "loop pass failed",
                extra={"loop": name, "error": str(exc), "retry_in": round(pause, 3)},
            )
        except Exception:
            failures += 1
            pause = _after(started, backoff_seconds(failures, cap=max_backoff_seconds))
            logger.exception(
                "loop pass failed unexpectedly", extra={"loop": name, "retry_in": round(pause, 3)}
            )
        else:
            failures = 0
        await asyncio.sleep(pause)


def _after(started: float, backoff: float) -> float:
    """What is left of `backoff` since `started` (the loop's clock)."""
    return max(0.0, started + backoff - asyncio.get_running_loop().time())
