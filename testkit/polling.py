from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call `probe` until it returns something other than None/False; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def api_healthy(client: httpx.AsyncClient) -> bool:
    """The API answers /health with 200 (a refused connection counts as not yet)."""
    try:
        return (await client.get("/health")).status_code == 200
    except httpx.TransportError:
        return False
