"""The app with its real lifespan, against the real MySQL/MariaDB and RabbitMQ.

The session gets a scratch database (from db/init.sql) and a scratch vhost; the app reaches
both through TCP proxies that the outage tests cut and restore. No worker runs here, so what
the API published is still in the queue to be inspected.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel
from conftest import live_app
from test_submit import VALID, assert_problem

from common.amqp import Topology
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask, TaskStatus
from testkit import fixtures
from testkit.broker import take_all
from testkit.polling import wait_until
from testkit.proxy import TcpProxy

pytestmark = pytest.mark.integration

# The real repository on the scratch database, not conftest.py's in-memory fake.
repository = fixtures.repository


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"dispatch_interval_seconds": 0.1, "dispatch_min_age_seconds": 0.5}


@pytest.fixture(scope="module")
def settings(proxied: Settings) -> Settings:
    """What the app gets: the same database and vhost, through the proxies."""
    return proxied


@pytest.fixture(scope="module")
async def live_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with live_app(settings) as client:
        yield client


async def queued_ids(
    channel: AbstractChannel, queue: str
) -> dict[str, aio_pika.abc.AbstractIncomingMessage]:
    return {m.message_id or "": m for m in await take_all(channel, queue)}


async def healthy(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health")).status_code == 200


async def test_row_exists_as_pending_right_after_the_202(
    live_client: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    body = {**VALID, "title": "Emoji 😀 survive", "metadata": {"tag": "🚀", "n": [1, 2]}}
    response = await live_client.post("/api/tasks", json=body)
    assert response.status_code == 202
    task_id = response.json()["task_id"]

    record = await repository.get(task_id)

    assert record is not None
    assert record.status is TaskStatus.PENDING
    assert (record.title, record.metadata) == ("Emoji 😀 survive", {"tag": "🚀", "n": [1, 2]})
    read = (await live_client.get(f"/api/tasks/{task_id}")).json()
    assert read["title"] == "Emoji 😀 survive"
    assert read["metadata"] == {"tag": "🚀", "n": [1, 2]}
    assert read["created_at"].endswith("+00:00")


async def test_message_is_persistent_on_a_durable_quorum_queue(
    live_client: httpx.AsyncClient, direct: Settings, channel: AbstractChannel
) -> None:
    task_id = (await live_client.post("/api/tasks", json=VALID)).json()["task_id"]

    # Declaring with durable=True and the same arguments fails (PRECONDITION_FAILED) unless
    # the queue the API declared is durable with exactly those arguments.
    topology = Topology.from_settings(direct)
    await channel.declare_queue(
        direct.task_queue, durable=True, arguments=topology.work_queue_arguments()
    )
    assert topology.work_queue_arguments()["x-queue-type"] == "quorum"
    message = (await queued_ids(channel, direct.task_queue))[task_id]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"


async def test_not_found_and_bad_input(live_client: httpx.AsyncClient) -> None:
    assert_problem(await live_client.get("/api/tasks/3f0c8f8e-0000-4000-8000-000000000000"), 404)
    assert_problem(await live_client.get("/api/tasks/nope"), 404)
    assert_problem(await live_client.post("/api/tasks", json={"title": ""}), 400)
    too_big = {"title": "t", "description": "d" * 1_100_000}
    assert_problem(await live_client.post("/api/tasks", json=too_big), 413)


async def test_broker_down_still_accepts_and_dispatches_when_it_returns(
    live_client: httpx.AsyncClient,
    broker_proxy: TcpProxy,
    direct: Settings,
    channel: AbstractChannel,
    repository: MySQLTaskRepository,
) -> None:
    await queued_ids(channel, direct.task_queue)  # start from an empty queue
    broker_proxy.cut()
    try:
        await wait_until(lambda: _not(healthy(live_client)), timeout=10, what="degraded health")
        health = (await live_client.get("/health")).json()
        assert health["checks"]["broker"] == "unavailable"
        responses = [await live_client.post("/api/tasks", json=VALID) for _ in range(5)]
        assert [r.status_code for r in responses] == [202] * 5
    finally:
        broker_proxy.restore()
    ids = {r.json()["task_id"] for r in responses}
    for task_id in ids:
        record = await repository.get(task_id)
        assert record is not None
        assert record.status is TaskStatus.PENDING

    await wait_until(lambda: healthy(live_client), timeout=15, what="broker back")
    found: set[str] = set()

    async def all_dispatched() -> bool:
        found.update(await queued_ids(channel, direct.task_queue))
        return ids <= found

    await wait_until(all_dispatched, timeout=15, what="dispatcher to publish")


async def test_task_committed_but_never_published_is_dispatched(
    live_client: httpx.AsyncClient,
    direct: Settings,
    channel: AbstractChannel,
    repository: MySQLTaskRepository,
) -> None:
    # What a crash between the commit and the publish leaves behind: a row, no message.
    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "orphan", "d", None))
    found: set[str] = set()

    async def dispatched() -> bool:
        found.update(await queued_ids(channel, direct.task_queue))
        return task_id in found

    await wait_until(dispatched, timeout=15, what="dispatcher to publish the orphan")


async def test_database_down_is_503_with_retry_after_and_nothing_half_written(
    live_client: httpx.AsyncClient,
    db_proxy: TcpProxy,
    direct: Settings,
    channel: AbstractChannel,
) -> None:
    await queued_ids(channel, direct.task_queue)
    db_proxy.cut()
    try:
        response = await live_client.post("/api/tasks", json=VALID)
        problem = assert_problem(response, 503)
        assert response.headers["retry-after"] == str(direct.retry_after_seconds)
        assert "database" in problem["detail"]
        assert_problem(await live_client.get(f"/api/tasks/{uuid.uuid4()}"), 503)
        health = await live_client.get("/health")
        assert health.status_code == 503
        assert health.json()["checks"]["database"] == "unavailable"
    finally:
        db_proxy.restore()
    assert await queued_ids(channel, direct.task_queue) == {}  # no message for a refused task

    async def accepted_again() -> bool:
        return (await live_client.post("/api/tasks", json=VALID)).status_code == 202

    await wait_until(accepted_again, timeout=15, what="database back")


async def _not(probe: asyncio.Future[bool] | object) -> bool:
    return not await probe  # type: ignore[misc]
