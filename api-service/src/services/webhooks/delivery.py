"""One webhook attempt over HTTP, and what it means: delivered, retry later, or failed.

This is the boundary of the receivers: whatever a receiver does (refuse, reset, hang,
answer slowly, answer with a redirect or a huge body), `HttpPoster.post` returns an Attempt
and never raises. Connections go only to addresses the SSRF guard allowed at that moment
(`GuardedBackend`, under httpcore's pools, which keep TLS verification and SNI on the URL's
host name). No redirect is followed; the answer is read up to MAX_RESPONSE_BYTES.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpcore
from httpcore import AnyIOBackend, AsyncNetworkStream

from services.webhooks.targets import Target, TargetRefused, checked_addresses, parse_target

MAX_RESPONSE_BYTES = 64 * 1024
# httpcore's pool scans every connection it holds at each request and each release
# (quadratic in them, encode/httpcore#1035): one pool of 64 cost the sender three times the
# rest of an attempt. So pools of at most this many, each attempt on the least busy one.
POOL_CONNECTIONS = 8


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx
    RETRY = "retry"  # timeout, connection error, 5xx, 429
    FAILED = "failed"  # any other answer, or a target the guard refuses


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    status_code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from a 429's or a 503's Retry-After


class GuardedBackend(AnyIOBackend):
    """httpcore's network backend, connecting only to the addresses `checked_addresses`
    allows for the host right now (resolved here, once, and connected to as resolved)."""

    def __init__(self, allowed_hosts: Collection[str]) -> None:
        self._allowed_hosts = allowed_hosts

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> AsyncNetworkStream:
        target = Target("http", host.strip("[]").lower(), port)
        addresses = await checked_addresses(target, self._allowed_hosts)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await super().connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header's delay: delta-seconds or an HTTP date (None if absent or bad)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def verdict_of(status: int, headers: Mapping[str, str], now: datetime) -> Attempt:
    if 200 <= status < 300:
        return Attempt(Verdict.DELIVERED, status)
    if status == 429 or status >= 500:
        retry_after = None
        if status in (429, 503):
            retry_after = retry_after_seconds(headers.get("retry-after"), now)
        return Attempt(Verdict.RETRY, status, f"the receiver answered {status}", retry_after)
    if 300 <= status < 400:
        return Attempt(
            Verdict.FAILED, status, f"the receiver answered {status} (redirects are not followed)"
        )
    return Attempt(Verdict.FAILED, status, f"the receiver answered {status}")


class HttpPoster:
    """POSTs webhooks through a few connection pools (keep-alive per receiver), that hold
    `max_connections` at most together."""

    def __init__(
        self, *, allowed_hosts: Collection[str], timeout_seconds: float, max_connections: int
    ) -> None:
        self._allowed_hosts = allowed_hosts
        self._timeout = timeout_seconds
        context = ssl.create_default_context()
        backend = GuardedBackend(allowed_hosts)
        full, rest = divmod(max_connections, POOL_CONNECTIONS)
        # Each pool, and the attempts it carries now.
        self._pools = {
            httpcore.AsyncConnectionPool(
                ssl_context=context,
                max_connections=size,
                keepalive_expiry=30.0,
                network_backend=backend,
            ): 0
            for size in [POOL_CONNECTIONS] * full + ([rest] if rest else [])
        }

    async def post(self, url: str, headers: Mapping[str, str], body: bytes) -> Attempt:
        """One attempt, within the timeout, whatever happens; never raises (but a cancel)."""
        try:
            parse_target(url)
            async with asyncio.timeout(self._timeout):
                return await self._post(url, headers, body)
        except TargetRefused as exc:
            return Attempt(Verdict.FAILED, error=f"refused: the URL {exc}")
        except (TimeoutError, httpcore.TimeoutException):
            return Attempt(Verdict.RETRY, error=f"timed out after {self._timeout:g} s")
        except (OSError, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            return Attempt(Verdict.RETRY, error=f"connection failed: {_summary(exc)}")
        except Exception as exc:  # whatever else a receiver made the client raise
            return Attempt(Verdict.RETRY, error=f"the attempt failed: {_summary(exc)}")

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes) -> Attempt:
        pool = min(self._pools, key=self._pools.__getitem__)
        self._pools[pool] += 1
        try:
            return await self._post_on(pool, url, headers, body)
        finally:
            self._pools[pool] -= 1

    async def _post_on(
        self,
        pool: httpcore.AsyncConnectionPool,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Attempt:
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self._timeout)
        async with pool.stream(
            "POST",
            url,
            headers=[*headers.items(), ("content-length", str(len(body)))],
            content=body,
            extensions={"timeout": timeouts},
        ) as response:
            read = 0
            async for chunk in response.aiter_stream():
                read += len(chunk)
                if read >= MAX_RESPONSE_BYTES:
                    break  # the rest is not needed; the connection is dropped with it
            answer = {
                name.decode().lower(): value.decode("latin-1") for name, value in response.headers
            }
            return verdict_of(response.status, answer, datetime.now(UTC))

    async def close(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def _summary(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
