"""The rate limit (a token bucket per caller on /api/) and the bound on open event streams
per tenant: the 429 problems, their Retry-After, and the draft's RateLimit-Policy and
RateLimit header fields on every /api/ answer."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from api.rate_limit import MAX_BUCKETS, TokenBuckets
from common.api_keys import new_api_key
from common.settings import load_settings
from common.tasks import NewTask
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.polling import wait_until
from testkit.serving import served

pytestmark = pytest.mark.unit

ALICE_KEY, ALICE = new_api_key("alice")
BOB_KEY, BOB = new_api_key("bob")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app_with(**settings: object) -> FastAPI:
    backends = Backends(repository=InMemoryTaskRepository(), publisher=RecordingPublisher())
    return create_app(load_settings(**settings), backends)


def client_of(app: FastAPI, address: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 3, clock=clock)
    taken = [buckets.take("a") for _ in range(4)]
    assert [d.allowed for d in taken] == [True, True, True, False]
    assert [d.remaining for d in taken] == [2, 1, 0, 0]
    assert taken[-1].retry_after == 1  # half a second to the next token, rounded up
    assert taken[2].full_in == 2  # 3 tokens at 2 a second
    assert buckets.take("b").allowed  # every key its own bucket
    clock.now += 0.5
    assert buckets.take("a").allowed
    assert not buckets.take("a").allowed
    clock.now += 60
    assert buckets.take("a").remaining == 2  # full again, never more than the burst
    assert buckets.window_seconds == 2


def test_the_buckets_stay_bounded_in_number() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1, clock=clock)
    for n in range(MAX_BUCKETS):
        buckets.take(f"k{n}")
    clock.now += 5  # all full again: forgotten when room is needed, at no loss
    buckets.take("one more")
    assert len(buckets._buckets) == 1
    for n in range(MAX_BUCKETS + 10):
        buckets.take(f"busy{n}")  # none full yet: the oldest half goes
    assert len(buckets._buckets) <= MAX_BUCKETS


async def test_over_the_limit_is_a_429_with_retry_after_and_the_draft_headers() -> None:
    app = app_with(rate_limit_per_second=1, rate_limit_burst=3)
    async with client_of(app) as client:
        answers = [await client.get("/api/tasks") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["ratelimit-policy"] == '"per-client";q=3;w=3'
    assert answers[0].headers["ratelimit"] == '"per-client";r=2;t=1'
    assert answers[2].headers["ratelimit"].startswith('"per-client";r=0;t=')
    limited = answers[3]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["type"] == "/problems/rate-limited"
    assert limited.json()["status"] == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["ratelimit-policy"] == '"per-client";q=3;w=3'
    assert limited.headers["ratelimit"].startswith('"per-client";r=0;t=')


async def test_while_open_each_client_address_has_its_own_bucket() -> None:
    app = app_with(rate_limit_per_second=0.01, rate_limit_burst=1)
    async with client_of(app, "10.0.0.1") as first, client_of(app, "10.0.0.2") as second:
        assert (await first.get("/api/tasks")).status_code == 200
        assert (await first.get("/api/tasks")).status_code == 429
        assert (await second.get("/api/tasks")).status_code == 200
        # Outside /api/: never limited, no headers.
        health = await first.get("/health/live")
        assert health.status_code == 200
        assert "ratelimit" not in health.headers


async def test_with_keys_each_tenant_has_its_own_bucket_wherever_it_calls_from() -> None:
    app = app_with(api_keys=f"{ALICE},{BOB}", rate_limit_per_second=0.01, rate_limit_burst=2)
    alice = {"Authorization": f"Bearer {ALICE_KEY}"}
    bob = {"Authorization": f"Bearer {BOB_KEY}"}
    async with client_of(app, "10.0.0.1") as one, client_of(app, "10.0.0.2") as other:
        assert (await one.get("/api/tasks", headers=alice)).status_code == 200
        answer = await other.get("/api/tasks", headers=alice)  # another address, same key
        assert answer.headers["ratelimit"].startswith('"per-key";r=0;')
        assert (await one.get("/api/tasks", headers=alice)).status_code == 429
        assert (await one.get("/api/tasks", headers=bob)).status_code == 200
        # A request without a valid key is refused before it is counted against anyone.
        assert (await one.get("/api/tasks")).status_code == 401


async def test_off_by_default() -> None:
    async with client_of(app_with()) as client:
        answers = [await client.get("/api/tasks") for _ in range(50)]
    assert {a.status_code for a in answers} == {200}
    assert "ratelimit" not in answers[0].headers


async def test_one_stream_more_than_max_streams_per_tenant_is_a_429() -> None:
    repository = InMemoryTaskRepository()
    settings = load_settings(api_keys=f"{ALICE},{BOB}", max_streams_per_tenant=2)
    app = create_app(settings, Backends(repository=repository, publisher=RecordingPublisher()))
    alice = {"Authorization": f"Bearer {ALICE_KEY}"}
    bob = {"Authorization": f"Bearer {BOB_KEY}"}
    task = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None, tenant="alice"))
    bobs = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None, tenant="bob"))
    path = f"/api/tasks/{task.task_id}/events"
    async with served(app) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        streams = contextlib.AsyncExitStack()
        reading: list[AsyncIterator[bytes]] = []
        async with streams:
            for headers, url in (
                (alice, path),
                (alice, path),
                (bob, f"/api/tasks/{bobs.task_id}/events"),
            ):
                answer = await streams.enter_async_context(
                    client.stream("GET", url, headers=headers)
                )
                assert answer.status_code == 200
                # The first bytes: the stream is open (its iterator kept, or it is closed).
                reading.append(answer.aiter_bytes())
                await anext(reading[-1])
            third = await client.get(path, headers=alice)
            assert third.status_code == 429  # Alice's third; Bob's one is his own
            assert third.json()["type"] == "/problems/too-many-streams"
            assert "retry-after" in third.headers
        # Closed by their client, the streams give their slots back.

        async def slots_free() -> bool:
            async with (
                client.stream("GET", path, headers=alice) as one,
                client.stream("GET", path, headers=alice) as two,
            ):
                return one.status_code == two.status_code == 200

        await wait_until(slots_free, timeout=10, interval=0.05, what="the slots given back")
