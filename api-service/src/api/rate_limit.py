"""A token bucket per caller on /api/ (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST), as pure ASGI
middleware: a tenant's bucket with API keys on, a client address's while they are off.

Each answer under /api/ says where its caller stands, in the header fields of the IETF httpapi
draft (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy: "<name>";q=<burst>;w=<seconds
to refill it>` and `RateLimit: "<name>";r=<requests left now>;t=<seconds until full again>`.
Past the limit, a 429 problem with `Retry-After`: the seconds until the next request fits.

The buckets live in the process: with API_WORKERS > 1 each process keeps its own, so a
caller whose connections land on N processes gets up to N times the rate (docs/api.md).
They are bounded in number: past MAX_BUCKETS, those full again (idle long enough) go first.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import OPEN, Caller
from api.problems import problem
from common.settings import Settings

RATE_LIMITED_PROBLEM = "/problems/rate-limited"
MAX_BUCKETS = 100_000
_API = "/api/"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    remaining: int  # whole requests left in the bucket after this one
    full_in: int  # seconds until the bucket is full again
    retry_after: int  # seconds until one more request fits (0 when allowed)


class TokenBuckets:
    """`burst` requests at once, refilled at `rate` a second, one bucket per key."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of when)

    @property
    def window_seconds(self) -> int:
        """How long an empty bucket takes to fill: the policy's window."""
        return max(1, math.ceil(self.burst / self.rate))

    def take(self, key: str) -> Decision:
        now = self._clock()
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if key not in self._buckets and len(self._buckets) >= MAX_BUCKETS:
            self._forget_full(now)
        self._buckets[key] = (tokens, now)
        full_in = math.ceil((self.burst - tokens) / self.rate)
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
        return Decision(allowed, int(tokens), full_in, retry_after)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have filled up again (forgetting one changes nothing)."""
        burst, rate = self.burst, self.rate
        self._buckets = {
            key: (tokens, stamp)
            for key, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * rate < burst
        }
        if len(self._buckets) >= MAX_BUCKETS:  # all busy: the oldest half goes
            keep = sorted(self._buckets.items(), key=lambda item: item[1][1])[MAX_BUCKETS // 2 :]
            self._buckets = dict(keep)


def install_rate_limit(app: FastAPI, settings: Settings) -> None:
    """The middleware when RATE_LIMIT_PER_SECOND is set (add it inside the API keys)."""
    rate = settings.rate_limit_per_second
    if rate > 0:
        burst = settings.rate_limit_burst or max(1, math.ceil(rate))
        app.add_middleware(RateLimit, buckets=TokenBuckets(rate, burst))


class RateLimit:
    """The middleware (inside the API keys, which name the caller)."""

    def __init__(self, app: ASGIApp, *, buckets: TokenBuckets) -> None:
        self.app = app
        self._buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_API):
            await self.app(scope, receive, send)
            return
        caller: Caller = scope.get("state", {}).get("caller", OPEN)
        if caller.tenant is not None:
            name, key = "per-key", f"k:{caller.tenant}"
        else:
            client = scope.get("client")
            name, key = "per-client", f"a:{client[0] if client else ''}"
        decision = self._buckets.take(key)
        headers = [
            (b"ratelimit-policy", _policy(name, self._buckets).encode()),
            (b"ratelimit", f'"{name}";r={decision.remaining};t={decision.full_in}'.encode()),
        ]
        if not decision.allowed:
            response = problem(
                429,
                f"Too many requests: at most {self._buckets.burst} at once and"
                f" {self._buckets.rate:g} a second; retry after {decision.retry_after} s.",
                type_=RATE_LIMITED_PROBLEM,
                headers={"Retry-After": str(decision.retry_after)},
            )
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, with_headers)


def _policy(name: str, buckets: TokenBuckets) -> str:
    return f'"{name}";q={buckets.burst};w={buckets.window_seconds}'
