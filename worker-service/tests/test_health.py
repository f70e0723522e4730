"""The worker's health port against the real MySQL/MariaDB and RabbitMQ, each behind the test
proxy: /health/live and /health/ready answer 200 while it consumes; ready is a 503 problem
naming the database while that is cut (within DATABASE_TIMEOUT_SECONDS when it goes silent),
and naming the consumer while the broker is cut or silent (within PUBLISH_TIMEOUT_SECONDS) or
has cancelled the consumer (its queue deleted); 200 again once the part is back, and a task
is completed after. As a
real process: WORKER_HEALTH_PORT=0 logs the port it took, and a port already taken stops
the worker at start with one line naming the variable."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from test_reliability import in_status, submit

from api.server import listen
from common.amqp import Topology
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import TaskStatus
from main import run_worker
from testkit import fixtures
from testkit.polling import wait_until
from testkit.processes import service_process
from testkit.proxy import Fault, TcpProxy
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

repository = fixtures.repository

RECOVERY_SECONDS = 5.0
# What an answer may take beyond the timeout that bounds it (a busy CI machine included).
MARGIN_SECONDS = 1.0
READY = {"consumer": "ok", "database": "ok"}

Probe = Callable[[], Awaitable[dict[str, Any] | None]]


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"processing_delay_min_seconds": 0.01, "processing_delay_max_seconds": 0.05}


@asynccontextmanager
async def worker_on_health_port(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The worker's real consume loop with its health port on a free port, bound first as
    `python main.py` does; a client of that port. Stopped on exit."""
    health_socket = listen(settings.model_copy(update={"worker_health_port": 0}))
    base_url = f"http://127.0.0.1:{health_socket.getsockname()[1]}"
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop, health_socket))
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            await wait_until(lambda: ready(client), timeout=15, what="the worker ready")
            yield client
            assert not worker.done(), worker
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=30)


async def ready(client: httpx.AsyncClient) -> bool:
    response = await client.get("/health/ready")
    return response.status_code == 200 and response.json()["checks"] == READY


async def live(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def not_ready_with(checks: dict[str, str], client: httpx.AsyncClient) -> Probe:
    """A probe for wait_until: the 503 problem of /health/ready once its checks are `checks`."""

    async def probe() -> dict[str, Any] | None:
        response = await client.get("/health/ready")
        if response.status_code == 200:
            return None
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem: dict[str, Any] = response.json()
        return problem if problem["checks"] == checks else None

    return probe


async def consumes_again(
    repository: MySQLTaskRepository, channel: AbstractChannel, direct: Settings
) -> None:
    task_id = await submit(repository, channel, direct)
    await wait_until(
        lambda: in_status(repository, task_id, TaskStatus.COMPLETED),
        timeout=RECOVERY_SECONDS,
        what="a task completed",
    )


async def test_live_and_ready_answer_200_while_the_worker_consumes(
    proxied: Settings,
    direct: Settings,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    async with worker_on_health_port(proxied) as client:
        await live(client)
        response = await client.get("/health/ready")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"status": "ok", "checks": READY}
        head = await client.head("/health/ready")
        assert (head.status_code, head.content) == (200, b"")
        await consumes_again(repository, channel, direct)


@pytest.mark.parametrize("shape", ["cut", Fault.BLACKHOLE], ids=["cut", "black_hole"])
async def test_ready_names_the_database_while_it_is_unavailable(
    shape: str | Fault,
    proxied: Settings,
    direct: Settings,
    db_proxy: TcpProxy,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    checks = {"consumer": "ok", "database": "unavailable"}
    async with worker_on_health_port(proxied) as client:
        if isinstance(shape, Fault):
            db_proxy.fault(shape)
        else:
            db_proxy.cut()
        try:
            started = time.monotonic()
            problem = await wait_until(
                not_ready_with(checks, client), timeout=10, what="ready naming the database"
            )
            if shape is Fault.BLACKHOLE:  # the first answer already: the ping's own timeout
                took = time.monotonic() - started
                assert took <= proxied.database_timeout_seconds + MARGIN_SECONDS, took
            assert problem["type"] == "/problems/service-unavailable"
            assert problem["detail"] == "not ready: database unavailable"
            await live(client)
        finally:
            db_proxy.restore()
        await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")
        await consumes_again(repository, channel, direct)


@pytest.mark.parametrize("shape", ["cut", Fault.BLACKHOLE], ids=["cut", "black_hole"])
async def test_ready_names_the_consumer_while_the_broker_is_unavailable(
    shape: str | Fault,
    proxied: Settings,
    direct: Settings,
    broker_proxy: TcpProxy,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    """Cut, the connection is lost at once. Gone silent, the connection looks up until the
    readiness check's own ping goes unanswered, which drops it."""
    checks = {"consumer": "unavailable", "database": "ok"}
    async with worker_on_health_port(proxied) as client:
        if isinstance(shape, Fault):
            broker_proxy.fault(shape)
        else:
            broker_proxy.cut()
        try:
            started = time.monotonic()
            problem = await wait_until(
                not_ready_with(checks, client), timeout=10, what="ready naming the consumer"
            )
            if shape is Fault.BLACKHOLE:  # the first answer already: the ping's own timeout
                took = time.monotonic() - started
                assert took <= proxied.publish_timeout_seconds + MARGIN_SECONDS, took
            assert problem["detail"] == "not ready: consumer unavailable"
            await live(client)
        finally:
            broker_proxy.restore()
        await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")
        await consumes_again(repository, channel, direct)


async def test_ready_names_the_consumer_the_broker_cancelled_until_it_subscribes_again(
    proxied: Settings,
    direct: Settings,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Deleting the work queue makes the broker cancel the worker's consumer. The worker
    subscribes again at once (declaring the queue anew), so the test first replaces the
    dead-letter queue, which it declares before, with one of another type: every new
    subscription fails on it until the test deletes it, which makes the 503 last."""
    caplog.set_level(logging.INFO)
    topology = Topology.from_settings(direct)
    other_type = "classic" if direct.task_queue_type == "quorum" else "quorum"
    checks = {"consumer": "unavailable", "database": "ok"}
    async with worker_on_health_port(proxied) as client:
        await channel.queue_delete(topology.dead_letter_queue)
        await channel.declare_queue(
            topology.dead_letter_queue, durable=True, arguments={"x-queue-type": other_type}
        )
        await channel.queue_delete(topology.work_queue)
        try:
            problem = await wait_until(
                not_ready_with(checks, client), timeout=10, what="ready naming the consumer"
            )
            assert problem["detail"] == "not ready: consumer unavailable"
            dropped = [r for r in caplog.records if r.getMessage() == "broker session dropped"]
            assert [r.reason for r in dropped] == [  # type: ignore[attr-defined]
                f"the broker cancelled the consumer on {topology.work_queue}"
            ]
            await live(client)
        finally:
            await channel.queue_delete(topology.dead_letter_queue)
        await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")
        await consumes_again(repository, channel, direct)


def logged_port(log: Path) -> int | None:
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["event"] == "health port open":
            port: int = entry["port"]
            return port
    return None


async def test_port_zero_takes_a_free_port_and_logs_it(direct: Settings, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = service_environment(direct) | {"WORKER_HEALTH_PORT": "0", "LOG_FORMAT": "json"}
    with service_process("worker-service", env, log) as worker:

        async def port() -> int | None:
            assert worker.poll() is None, log.read_text()
            return logged_port(log)

        found = await wait_until(port, timeout=30, what="the health port in the log")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{found}", timeout=30) as client:
            await live(client)
            await wait_until(lambda: ready(client), timeout=15, what="the worker ready")


async def test_a_port_already_taken_stops_the_worker_in_one_line(
    direct: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = service_environment(direct) | {"WORKER_HEALTH_PORT": str(port)}
        with service_process("worker-service", env, log) as worker:
            code = await asyncio.to_thread(worker.wait, 30)
    assert code == 1
    assert log.read_text().splitlines() == [
        f"worker: WORKER_HEALTH_PORT: port {port} is already in use"
    ]
