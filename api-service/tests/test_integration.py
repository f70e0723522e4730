"""The app with its real lifespan, against the real MySQL/MariaDB and RabbitMQ.

Each test session gets a scratch database (from db/init.sql) and a scratch vhost. No worker
runs here, so what the API published is still in the queue to be inspected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from test_submit import VALID, assert_problem

from common.broker import connect_broker, queue_arguments
from common.database import MySQLTaskRepository, close_pool, create_pool
from common.settings import Settings
from common.tasks import TaskStatus
from main import create_app
from testkit.scratch import scratch_environment

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def settings() -> AsyncIterator[Settings]:
    async with scratch_environment(max_body_bytes=100_000) as settings:
        yield settings


@pytest.fixture(scope="module")
async def live_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture(scope="module")
async def repository(settings: Settings) -> AsyncIterator[MySQLTaskRepository]:
    pool = await create_pool(settings)
    yield MySQLTaskRepository(pool, timeout=5)
    await close_pool(pool)


@pytest.fixture(scope="module")
async def broker(settings: Settings) -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect_broker(settings)
    yield connection
    await connection.close()


@pytest.fixture
async def channel(broker: AbstractRobustConnection) -> AsyncIterator[AbstractChannel]:
    channel = await broker.channel()
    yield channel
    await channel.close()


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


async def test_message_is_persistent_on_a_durable_queue(
    live_client: httpx.AsyncClient, settings: Settings, channel: AbstractChannel
) -> None:
    task_id = (await live_client.post("/api/tasks", json=VALID)).json()["task_id"]

    # Declaring with durable=True and the same arguments fails (PRECONDITION_FAILED) unless
    # the queue the API declared is durable with those arguments.
    queue = await channel.declare_queue(
        settings.task_queue, durable=True, arguments=queue_arguments(settings)
    )
    found = {}
    while (message := await queue.get(fail=False)) is not None:
        found[message.message_id] = message
        await message.ack()
    message = found[task_id]
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.body.startswith(b"{")


async def test_not_found_and_bad_input(live_client: httpx.AsyncClient) -> None:
    assert_problem(await live_client.get("/api/tasks/3f0c8f8e-0000-4000-8000-000000000000"), 404)
    assert_problem(await live_client.get("/api/tasks/nope"), 404)
    assert_problem(await live_client.post("/api/tasks", json={"title": ""}), 400)
    too_big = {"title": "t", "description": "d" * 100_001}
    assert_problem(await live_client.post("/api/tasks", json=too_big), 413)


async def test_health_is_ok_with_real_backends(live_client: httpx.AsyncClient) -> None:
    response = await live_client.get("/health")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}
