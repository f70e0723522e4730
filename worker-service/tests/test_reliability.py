"""Failure paths of the real consume loop: retries, dead letters, and outages staged with TCP
proxies in front of the real MySQL/MariaDB and RabbitMQ."""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel
from test_integration import running_worker

from common.amqp import Topology
from common.messages import TaskMessage
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask, TaskRecord, TaskStatus
from testkit import fixtures
from testkit.broker import publish_raw, publish_task, take_all
from testkit.polling import wait_until
from testkit.proxy import TcpProxy

pytestmark = pytest.mark.integration

# The real repository on the scratch database, not conftest.py's in-memory fake.
repository = fixtures.repository


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "processing_delay_min_seconds": 0.01,
        "processing_delay_max_seconds": 0.05,
        "max_attempts": 3,
        "retry_backoff_base_seconds": 0.05,
        "retry_backoff_factor": 2.0,
        "requeue_pause_seconds": 0.1,
    }


async def submit(
    repository: MySQLTaskRepository, channel: AbstractChannel, settings: Settings
) -> str:
    """A task stored and published as the API would, around any proxy."""
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None))
    await publish_task(channel, settings, TaskMessage.from_record(record))
    return record.task_id


async def in_status(
    repository: MySQLTaskRepository, task_id: str, status: TaskStatus
) -> TaskRecord | None:
    record = await repository.get(task_id)
    return record if record is not None and record.status is status else None


async def dead_lettered(
    channel: AbstractChannel, settings: Settings, seen: list[bytes]
) -> list[bytes]:
    dlq = Topology.from_settings(settings).dead_letter_queue
    seen.extend(message.body for message in await take_all(channel, dlq))
    return seen


async def test_task_that_always_fails_ends_failed_and_dead_lettered(
    direct: Settings, repository: MySQLTaskRepository, channel: AbstractChannel
) -> None:
    failing = direct.model_copy(update={"processing_failure_rate": 1.0})
    task_id = await submit(repository, channel, direct)
    seen: list[bytes] = []
    async with running_worker(failing):
        failed = await wait_until(
            lambda: in_status(repository, task_id, TaskStatus.FAILED), timeout=20, what="FAILED"
        )
        await wait_until(
            lambda: _contains(dead_lettered(channel, direct, seen), task_id.encode()),
            timeout=10,
            what="message in the DLQ",
        )
    assert failed.attempts == 3
    assert failed.last_error == "SimulatedFailure: simulated failure (PROCESSING_FAILURE_RATE)"
    assert failed.completed_at is None


async def test_failed_attempts_are_retried_until_one_succeeds(
    direct: Settings, repository: MySQLTaskRepository, channel: AbstractChannel
) -> None:
    # Half the attempts fail; with 3 attempts each, most tasks complete after a retry or two.
    flaky = direct.model_copy(update={"processing_failure_rate": 0.5})
    ids = [await submit(repository, channel, direct) for _ in range(20)]
    async with running_worker(flaky):
        for task_id in ids:
            await wait_until(functools.partial(_final, repository, task_id), timeout=30)
    records = [await repository.get(task_id) for task_id in ids]
    retried = [r for r in records if r is not None and r.attempts > 1]
    assert retried, "with a failure rate of 0.5, some of 20 tasks needed more than one attempt"
    for record in records:
        assert record is not None
        if record.status is TaskStatus.COMPLETED:
            assert record.completed_at is not None
        else:
            assert (record.status, record.attempts) == (TaskStatus.FAILED, 3)


async def test_poison_messages_go_to_the_dlq_without_retries(
    direct: Settings, repository: MySQLTaskRepository, channel: AbstractChannel
) -> None:
    unknown = str(uuid.uuid4())
    await publish_raw(channel, direct, b"\x00 not json")
    await publish_task(channel, direct, TaskMessage(unknown, "ghost", "no row", None))
    seen: list[bytes] = []
    async with running_worker(direct) as worker:
        await wait_until(
            lambda: _contains(dead_lettered(channel, direct, seen), b"\x00 not json"), timeout=10
        )
        await wait_until(
            lambda: _contains(dead_lettered(channel, direct, seen), unknown.encode()), timeout=10
        )
        assert not worker.done()


async def test_worker_consumes_again_after_the_broker_connection_is_cut(
    proxied: Settings,
    direct: Settings,
    broker_proxy: TcpProxy,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    async with running_worker(proxied):
        before = await submit(repository, channel, direct)
        await wait_until(lambda: in_status(repository, before, TaskStatus.COMPLETED), timeout=10)
        connections = broker_proxy.connections_made
        broker_proxy.cut()
        during = await submit(repository, channel, direct)
        await wait_until(lambda: _tried(broker_proxy), timeout=10, what="a reconnect attempt")
        broker_proxy.restore()
        await wait_until(lambda: in_status(repository, during, TaskStatus.COMPLETED), timeout=20)
        after = await submit(repository, channel, direct)
        await wait_until(lambda: in_status(repository, after, TaskStatus.COMPLETED), timeout=20)
    assert broker_proxy.connections_made > connections  # it really reconnected


async def test_tasks_complete_once_the_database_comes_back(
    proxied: Settings,
    direct: Settings,
    db_proxy: TcpProxy,
    repository: MySQLTaskRepository,
    channel: AbstractChannel,
) -> None:
    async with running_worker(proxied):
        db_proxy.cut()
        try:
            ids = [await submit(repository, channel, direct) for _ in range(5)]
            # Several attempts meet the outage (and are rescheduled) before it ends.
            await wait_until(lambda: _tried(db_proxy, times=5), timeout=10, what="attempts")
            for task_id in ids:
                assert await in_status(repository, task_id, TaskStatus.PENDING)
        finally:
            db_proxy.restore()
        for task_id in ids:
            done = await wait_until(
                functools.partial(in_status, repository, task_id, TaskStatus.COMPLETED), timeout=30
            )
            assert done.completed_at is not None


async def _contains(found: asyncio.Future[list[bytes]] | object, needle: bytes) -> bool:
    return any(needle in body for body in await found)  # type: ignore[misc]


async def _final(repository: MySQLTaskRepository, task_id: str) -> bool:
    record = await repository.get(task_id)
    return record is not None and record.status in (TaskStatus.COMPLETED, TaskStatus.FAILED)


async def _tried(proxy: TcpProxy, times: int = 1) -> bool:
    return proxy.connections_refused >= times


async def test_a_task_whose_claim_holder_vanished_is_taken_over_after_the_lease(
    direct: Settings, repository: MySQLTaskRepository, channel: AbstractChannel
) -> None:
    """A claim with no worker behind it (the worker was killed right after it, or the claim
    reached the database after its worker had given up), and one plain message left for the
    task: the message is not dropped as a duplicate, it comes back and takes the task over
    once the lease has run out."""
    short_lease = direct.model_copy(update={"task_lease_seconds": 1.0})
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None))
    claim = await repository.claim(record.task_id, lease_seconds=1.0, steal=False)
    assert claim.attempts == 1  # the vanished holder's attempt
    await publish_task(channel, direct, TaskMessage.from_record(record))
    async with running_worker(short_lease):
        done = await wait_until(
            lambda: in_status(repository, record.task_id, TaskStatus.COMPLETED), timeout=15
        )
    assert done.attempts == 2
