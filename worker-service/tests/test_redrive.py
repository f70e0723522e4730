"""`redrive.py` against the real MySQL/MariaDB and RabbitMQ."""

from __future__ import annotations

import uuid

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from common.amqp import Topology
from common.messages import TaskMessage
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask, TaskStatus
from redrive import redrive
from testkit import fixtures
from testkit.broker import broker_channel, take_all

pytestmark = pytest.mark.integration

# The real repository on the scratch database, not conftest.py's in-memory fake.
repository = fixtures.repository


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


async def task_in(repository: MySQLTaskRepository, final: TaskStatus) -> TaskMessage:
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None))
    await repository.claim(record.task_id, lease_seconds=60, steal=False)
    if final is TaskStatus.FAILED:
        await repository.fail(record.task_id, "ValueError: boom")
    else:
        await repository.complete(record.task_id)
    return TaskMessage.from_record(record)


async def dead_letter(
    channel: AbstractChannel, topology: Topology, message: aio_pika.Message
) -> None:
    dlx = await channel.get_exchange(topology.dead_letter_exchange)
    await dlx.publish(message, routing_key="")


async def test_redrive_resets_failed_tasks_and_keeps_poison(
    settings: Settings, repository: MySQLTaskRepository
) -> None:
    topology = Topology.from_settings(settings)
    failed = await task_in(repository, TaskStatus.FAILED)
    completed = await task_in(repository, TaskStatus.COMPLETED)
    ghost = TaskMessage(str(uuid.uuid4()), "ghost", "no row", None)
    async with broker_channel(settings) as channel:
        for message in (failed, completed, ghost):
            letter = aio_pika.Message(message.encode(), message_id=message.task_id)
            await dead_letter(channel, topology, letter)
        await dead_letter(channel, topology, aio_pika.Message(b"not json"))

        report = await redrive(settings, limit=100)

        assert (report.moved, report.dropped, report.kept) == (1, 1, 2)
        requeued = await take_all(channel, topology.work_queue)
        assert [m.message_id for m in requeued] == [failed.task_id]
        left = {m.body for m in await take_all(channel, topology.dead_letter_queue)}
        assert left == {ghost.encode(), b"not json"}
    record = await repository.get(failed.task_id)
    assert record is not None
    assert (record.status, record.attempts, record.last_error) == (TaskStatus.PENDING, 0, None)
