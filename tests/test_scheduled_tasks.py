"""Scheduled tasks end to end: both services as real processes on the real MySQL/MariaDB and
RabbitMQ. A task is not claimed before its run_at and starts within DISPATCH_INTERVAL_SECONDS
+ 1 s of it, alone or with many others due at the same moment; one cancelled before it is due
never runs. Then the dispatcher's SQL on a database of its own: two dispatchers side by side
publish each due task once, and its plans read one short index range each, however many
tasks wait for later."""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from test_end_to_end import Stack, processes, stack, status_of, wait_completed

from common.messages import TaskMessage
from common.mysql import Database, MySQLTaskRepository
from common.mysql.events import in_clause
from common.mysql.repository import DISPATCH_SELECTS, NEXT_DUE_SELECT
from common.mysql.schema import INIT_SQL, one_connection
from common.ports import PublishOne
from common.settings import DatabaseAddress, Settings, load_settings
from common.tasks import NewTask, TaskRecord
from testkit.fakes import RecordingPublisher
from testkit.polling import wait_until
from testkit.processes import free_port
from testkit.scratch import database_url, scratch_database
from testkit.sql import query

pytestmark = pytest.mark.integration

__all__ = ["processes", "stack"]  # the stack of test_end_to_end, with this module's settings

INTERVAL = 1.0  # DISPATCH_INTERVAL_SECONDS
ON_TIME = timedelta(seconds=INTERVAL + 1)  # the latest a due task may start after its run_at
TASK = {"title": "Scheduled", "description": "a task with a run_at"}


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": 0.05,
        "processing_delay_max_seconds": 0.1,
        "log_format": "json",
        "worker_concurrency": 32,
        "dispatch_interval_seconds": INTERVAL,
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


def at(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def submit(client: httpx.AsyncClient, **schedule: object) -> str:
    response = await client.post("/api/tasks", json={**TASK, **schedule})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "PENDING"
    task_id: str = response.json()["task_id"]
    return task_id


def log_events(stack: Stack, service: str, task_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of `service` ("api" or "worker") that name the task."""
    lines = (stack.logs / f"{service}.log").read_text().splitlines()
    return [json.loads(line) for line in lines if task_id in line]


def assert_started_on_time(task: dict[str, Any]) -> None:
    """Not claimed before its run_at, and claimed within the interval + 1 s of it."""
    run_at, started_at = at(task["run_at"]), at(task["started_at"])
    assert timedelta(0) <= started_at - run_at <= ON_TIME, (task["task_id"], run_at, started_at)


async def test_a_delayed_task_waits_for_its_run_at_then_starts_on_time(stack: Stack) -> None:
    task_id = await submit(stack.client, delay_seconds=3)
    task = await status_of(stack.client, task_id)
    assert (task["status"], task["started_at"], task["attempts"]) == ("PENDING", None, 0)
    assert at(task["run_at"]) - at(task["created_at"]) == pytest.approx(
        timedelta(seconds=3), abs=timedelta(seconds=0.5)
    )

    done = await wait_completed(stack.client, task_id, timeout=15)
    assert_started_on_time(done)
    assert done["attempts"] == 1
    # Published by the dispatcher once due, not by the request that stored it.
    api = log_events(stack, "api", task_id)
    published = [line for line in api if line["event"] == "task published"]
    assert [line.get("by") for line in published] == ["dispatcher"], api
    assert not [line for line in api if line["event"] == "task accepted"], api


async def test_many_tasks_due_at_one_moment_all_start_on_time(stack: Stack) -> None:
    run_at = in_seconds(4)
    ids = await asyncio.gather(*(submit(stack.client, run_at=run_at) for _ in range(40)))
    assert len(set(ids)) == 40
    for task_id in ids:
        done = await wait_completed(stack.client, task_id, timeout=20)
        assert at(done["run_at"]) == at(run_at)
        assert_started_on_time(done)


async def test_a_scheduled_task_cancelled_before_it_is_due_never_runs(stack: Stack) -> None:
    run_at = in_seconds(4)
    cancelled = await submit(stack.client, run_at=run_at)
    witness = await submit(stack.client, run_at=run_at)  # due with it, and left to run
    response = await stack.client.post(f"/api/tasks/{cancelled}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    assert datetime.now(UTC) < at(run_at), "cancelled only once due: the test proves nothing"

    # The witness running proves a dispatcher pass has seen them both due; the margin after
    # it, that later passes have had their chance too.
    await wait_completed(stack.client, witness, timeout=15)

    async def past_the_margin() -> bool:
        return datetime.now(UTC) > at(run_at) + ON_TIME + timedelta(seconds=1)

    await wait_until(past_the_margin, timeout=10, interval=0.1, what="run_at plus a margin")
    task = await status_of(stack.client, cancelled)
    assert (task["status"], task["started_at"], task["attempts"]) == ("CANCELLED", None, 0)
    assert task["run_at"] is not None
    # Never even published: the worker never heard of it.
    api = log_events(stack, "api", cancelled)
    assert not [line for line in api if line["event"] == "task published"], api
    assert log_events(stack, "worker", cancelled) == []


async def test_the_pending_list_shows_a_scheduled_task_with_its_run_at(stack: Stack) -> None:
    task_id = await submit(stack.client, delay_seconds=600)
    shown = await status_of(stack.client, task_id)

    response = await stack.client.get("/api/tasks", params={"status": "PENDING", "limit": 100})

    assert response.status_code == 200
    items = {item["task_id"]: item for item in response.json()["items"]}
    assert items[task_id]["status"] == "PENDING"
    assert items[task_id]["run_at"] == shown["run_at"]
    assert at(shown["run_at"]) > datetime.now(UTC) + timedelta(seconds=590)
    assert (await stack.client.post(f"/api/tasks/{task_id}/cancel")).status_code == 200


# The dispatcher's SQL, on a database no service uses: nothing else publishes its rows.


@pytest.fixture
async def quiet() -> AsyncIterator[Settings]:
    """Settings for a scratch database of the schema at head, of the test's own, with no
    services on it."""
    async with scratch_database(INIT_SQL.read_text()) as address:
        yield load_settings(database_url=database_url(address))


@pytest.fixture
async def dispatchers(quiet: Settings) -> AsyncIterator[list[MySQLTaskRepository]]:
    """Two repositories, each on its own pool: two API replicas' dispatchers."""
    databases = [Database(quiet), Database(quiet)]
    for database in databases:
        await database.start()
    yield [MySQLTaskRepository(database) for database in databases]
    for database in databases:
        await database.close()


def new_tasks(count: int, run_at: datetime | None = None) -> list[NewTask]:
    return [NewTask(str(uuid.uuid4()), "t", "d", None, run_at=run_at) for _ in range(count)]


def recording(publisher: RecordingPublisher, together: asyncio.Barrier) -> PublishOne:
    """A publish that records the message; the first one waits for the other dispatcher's
    first one, so that both hold their rows at the same moment, and each is slow enough
    that the other dispatcher's passes run while it holds them."""
    first = True

    async def publish(record: TaskRecord) -> bool:
        nonlocal first
        if first:
            first = False
            await asyncio.wait_for(together.wait(), timeout=10)
        await asyncio.sleep(0.01)  # a broker's confirm, not a synchronisation
        await publisher.publish(TaskMessage.from_record(record))
        return True

    return publish


async def undispatched(address: DatabaseAddress, tasks: list[NewTask]) -> int:
    """How many of `tasks` have no outbox mark."""
    ids = [task.task_id for task in tasks]
    [(count,)] = await query(
        address,
        f"SELECT COUNT(*) FROM tasks WHERE dispatched_at IS NULL AND id IN ({in_clause(len(ids))})",
        *ids,
    )
    return int(count)


async def test_two_dispatchers_side_by_side_publish_each_due_task_once(
    quiet: Settings, dispatchers: list[MySQLTaskRepository]
) -> None:
    first, _ = dispatchers
    unconfirmed = new_tasks(150)  # their API's publish never confirmed: backdated below
    fresh = new_tasks(20)  # still in their request's hands: younger than the min age
    scheduled = new_tasks(150, run_at=datetime.now(UTC) + timedelta(seconds=0.5))
    later = new_tasks(100, run_at=datetime.now(UTC) + timedelta(hours=1))
    await first.create_many(unconfirmed)
    ids = [task.task_id for task in unconfirmed]
    await query(
        quiet.database,
        "UPDATE tasks SET updated_at = updated_at - INTERVAL 1 HOUR"
        f" WHERE id IN ({in_clause(len(ids))})",
        *ids,
    )
    for batch in (fresh, scheduled, later):
        await first.create_many(batch)

    async def all_due() -> bool:
        run_at = scheduled[0].run_at
        assert run_at is not None
        return datetime.now(UTC) > run_at

    await wait_until(all_due, timeout=5, what="the scheduled tasks due")
    publishers = [RecordingPublisher(), RecordingPublisher()]
    together = asyncio.Barrier(2)

    async def drain(repository: MySQLTaskRepository, publish: PublishOne) -> None:
        # The scheduled tasks are younger than the min age too: written before they were
        # due, they are the dispatcher's to send however new.
        while await repository.dispatch_undispatched(publish=publish, limit=40, min_age_seconds=60):
            pass

    await asyncio.wait_for(
        asyncio.gather(
            *(
                drain(repository, recording(publisher, together))
                for repository, publisher in zip(dispatchers, publishers, strict=True)
            )
        ),
        timeout=60,
    )

    sent = [message.task_id for publisher in publishers for message in publisher.published]
    twice = [task_id for task_id, n in collections.Counter(sent).items() if n > 1]
    assert twice == []
    assert set(sent) == {task.task_id for task in unconfirmed + scheduled}
    assert all(publisher.published for publisher in publishers)  # both took part
    address = quiet.database
    assert await undispatched(address, unconfirmed + scheduled) == 0
    assert await undispatched(address, fresh + later) == len(fresh) + len(later)
    assert await first.next_due_in() == pytest.approx(3600, abs=30)


# A numbers table from digits, in MariaDB and MySQL alike: 0 .. 10^6 - 1.
DIGITS = "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {d}" for d in range(1, 10)) + ")"
NUMBERS = (
    "SELECT " + " + ".join(f"d{k}.d * {10**k}" for k in range(6)) + " AS n FROM "
    + " CROSS JOIN ".join(f"{DIGITS} AS d{k}" for k in range(6))
)  # fmt: skip


async def bulk_insert(
    address: DatabaseAddress, count: int, *, run_at: str, updated_at: str
) -> None:
    """`count` PENDING, undispatched rows in one INSERT ... SELECT, ids in ascending order;
    run_at and updated_at are SQL expressions of `n`, the row's number."""
    prefix = uuid.uuid4().hex[:8]
    await query(
        address,
        "INSERT INTO tasks (id, title, description, status, run_at, created_at, updated_at)"
        f" SELECT CONCAT('{prefix}-0000-4000-8000-', LPAD(n, 12, '0')), 'bulk', 'd', 'PENDING',"
        f" {run_at}, UTC_TIMESTAMP(6), {updated_at} FROM ({NUMBERS}) AS numbers WHERE n < %s",
        count,
    )


async def plans(address: DatabaseAddress) -> list[dict[str, Any]]:
    """EXPLAIN of the dispatcher's two SELECTs (a 2 s min age, a batch of 200) and of its
    wait until the next one."""
    found = []
    async with one_connection(address) as cursor:
        for sql, args in [*((select, (2_000_000, 200)) for select in DISPATCH_SELECTS),
                          (NEXT_DUE_SELECT, None)]:  # fmt: skip
            await cursor.execute(f"EXPLAIN {sql}", args)
            names = [column[0].lower() for column in cursor.description]
            [plan] = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
            found.append(plan)
    return found


async def test_the_dispatcher_reads_one_short_range_however_many_wait_for_later(
    quiet: Settings,
) -> None:
    address = quiet.database
    await bulk_insert(address, 5, run_at="NULL", updated_at="UTC_TIMESTAMP(6) - INTERVAL 1 HOUR")
    await bulk_insert(
        address,
        5,
        run_at="UTC_TIMESTAMP(6) - INTERVAL n SECOND",
        updated_at="UTC_TIMESTAMP(6) - INTERVAL 1 HOUR",
    )
    before = await plans(address)
    await bulk_insert(
        address,
        20_000,
        run_at="UTC_TIMESTAMP(6) + INTERVAL 1 DAY + INTERVAL n SECOND",
        updated_at="UTC_TIMESTAMP(6)",
    )
    [(waiting,)] = await query(
        address, "SELECT COUNT(*) FROM tasks WHERE run_at > UTC_TIMESTAMP(6)"
    )
    assert waiting >= 20_000

    after = await plans(address)

    for plan, earlier in zip(after[:2], before[:2], strict=True):
        assert plan["key"] == "idx_tasks_undispatched", plan
        assert plan["type"] in ("ref", "range"), plan
        assert "filesort" not in (plan["extra"] or "").lower(), plan
        # The estimate is of the 10 due rows, not of the 20,000 waiting for later.
        assert int(plan["rows"]) <= int(earlier["rows"]) + 5, (plan, earlier)
        assert int(plan["rows"]) < 50, plan
    # The next run_at is the first entry of the range: read off the index, no rows scanned.
    assert "optimized away" in (after[2]["extra"] or "").lower(), after[2]
