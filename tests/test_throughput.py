"""task_throughput on the real server: the create and complete paths count each tenant's
submitted and completed tasks in the current UTC minute (the worker's grouped batch
included), only a completion counts as completed, a rolled-back transition counts nothing,
the read sums the shards into one entry per minute, and the purge takes only minutes a day
old, in bounded batches."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from common.errors import DependencyUnavailable
from common.mysql import Database, MySQLTaskRepository, grouped_repository, throughput
from common.mysql.connection import Statement
from common.mysql.repository import ClaimRequest
from common.mysql.schema import one_connection
from common.settings import Settings
from common.tasks import IdempotencyKey, MinuteThroughput, NewTask
from testkit.sql import query

pytestmark = pytest.mark.integration


def tenant_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def new_tasks(count: int, tenant: str) -> list[NewTask]:
    return [NewTask(str(uuid.uuid4()), f"t{n}", "d", None, tenant=tenant) for n in range(count)]


async def totals(repository: MySQLTaskRepository, tenant: str) -> tuple[int, int]:
    """Submitted and completed over the last three minutes (a test may cross a minute)."""
    window = await repository.throughput(tenant, minutes=3)
    return sum(m.submitted for m in window), sum(m.completed for m in window)


async def current_minute(direct: Settings) -> datetime:
    [(now,)] = await query(
        direct.database, "SELECT UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND"
    )
    return now.replace(tzinfo=UTC)  # type: ignore[no-any-return]


async def test_each_tenant_is_counted_through_the_create_and_complete_paths(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    alice, bob, nobody = tenant_name(), tenant_name(), tenant_name()
    batch = [*new_tasks(4, alice), *new_tasks(3, bob)]  # two tenants in one insert
    await repository.create_many(batch)
    [single] = new_tasks(1, alice)
    await repository.create(single)
    [keyed] = new_tasks(1, bob)
    key = IdempotencyKey(bob, f"k-{uuid.uuid4()}", hashlib.sha256(b"b").digest(), 3600)
    await repository.create_idempotent(keyed, key)
    await repository.create_idempotent(NewTask(str(uuid.uuid4()), "t", "d", None, tenant=bob), key)
    assert await totals(repository, alice) == (5, 0)
    assert await totals(repository, bob) == (4, 0)  # the replay made no task

    ids = [task.task_id for task in batch]
    await repository.claim_many([ClaimRequest(task_id) for task_id in ids], lease_seconds=60)
    # One batch over both tenants, naming a task twice and one that is not PROCESSING.
    completions = [(ids[0], None), (ids[1], '{"a": 1}'), (ids[0], None), (ids[4], None)]
    await repository.complete_many([*completions, (single.task_id, None)])
    assert await repository.complete(ids[5])
    # Ended, but not completed: a failure, a cancel, and a retry back to PENDING.
    assert await repository.fail(ids[2], "boom")
    await repository.cancel(ids[3])
    assert await repository.release_for_retry(ids[6], "again")
    assert not await repository.complete(ids[6])  # PENDING again: no completion
    assert await totals(repository, alice) == (5, 2)
    assert await totals(repository, bob) == (4, 2)
    assert await totals(repository, nobody) == (0, 0)

    # Every row of theirs is in the current minute (or the one before, across a boundary).
    now = await current_minute(direct)
    rows = await query(
        direct.database,
        "SELECT DISTINCT minute FROM task_throughput WHERE tenant IN (%s, %s)",
        alice,
        bob,
    )
    assert {row[0].replace(tzinfo=UTC) for row in rows} <= {now, now - timedelta(minutes=1)}


@pytest.fixture(scope="module")
async def pools(direct: Settings) -> AsyncIterator[list[Database]]:
    """Two more pools: the grouped repository as the worker runs it, and another writer."""
    databases = [Database(direct) for _ in range(2)]
    for database in databases:
        await database.start()
    yield databases
    for database in databases:
        await database.close()


async def test_the_workers_grouped_completions_are_counted_once_each(
    repository: MySQLTaskRepository, pools: list[Database]
) -> None:
    tenants = [tenant_name(), tenant_name()]
    tasks = [task for tenant in tenants for task in new_tasks(30, tenant)]
    worker = grouped_repository(pools[0])
    other = MySQLTaskRepository(pools[1])
    await asyncio.gather(
        *(worker.create(task) for task in tasks[:40]), other.create_many(tasks[40:])
    )
    await asyncio.gather(
        *(worker.claim(task.task_id, lease_seconds=60, steal=False) for task in tasks)
    )
    # Concurrent completions share complete_many's statements, as a worker's deliveries do;
    # each task is completed twice (a redelivery), counted once.
    done = await asyncio.gather(*(worker.complete(task.task_id) for task in tasks * 2))
    assert sum(done) == len(tasks)
    for tenant in tenants:
        assert await totals(repository, tenant) == (30, 30)


async def test_a_rolled_back_transition_counts_nothing(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    tenant = tenant_name()
    tasks = new_tasks(3, tenant)
    await repository.create_many(tasks)
    ids = [task.task_id for task in tasks]
    await repository.claim_many([ClaimRequest(task_id) for task_id in ids], lease_seconds=60)
    database = Database(direct)
    await database.start()
    token = uuid.uuid4().hex
    failing: Statement = ("SELECT no_such_column FROM tasks LIMIT 1", [])
    try:
        with pytest.raises(DependencyUnavailable):
            await database.script([throughput.submitted([tenant] * 5), failing])
        with pytest.raises(DependencyUnavailable):
            await database.script(
                [
                    (
                        "UPDATE tasks SET status = 'COMPLETED', claim_token = %s"
                        f" WHERE id IN ({', '.join(['%s'] * len(ids))})",
                        [token, *ids],
                    ),
                    throughput.completed(ids, token),
                    failing,
                ]
            )
    finally:
        await database.close()
    assert await totals(repository, tenant) == (3, 0)  # the create's own, nothing more


async def test_the_read_sums_the_shards_into_every_minute_oldest_first(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    tenant, neighbour = tenant_name(), tenant_name()
    # Minutes 0 (now), 2 and 5 back, on several shards; the neighbour's rows in between.
    for back, shard, submitted, completed in [
        (0, 1, 2, 0),
        (0, 9, 3, 1),
        (2, 0, 1, 4),
        (5, 15, 7, 7),
        (5, 3, 1, 0),
        (60, 2, 100, 100),  # beyond a 60-minute window
    ]:
        await query(
            direct.database,
            "INSERT INTO task_throughput (tenant, minute, shard, submitted, completed)"
            " VALUES (%s, UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND"
            " - INTERVAL %s MINUTE, %s, %s, %s)",
            tenant,
            back,
            shard,
            submitted,
            completed,
        )
    await query(
        direct.database,
        "INSERT INTO task_throughput (tenant, minute, shard, submitted)"
        " VALUES (%s, UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND, 4, 50)",
        neighbour,
    )
    now = await current_minute(direct)
    window = await repository.throughput(tenant, minutes=60)
    if window[-1].minute != now:  # the minute turned between the writes and the read
        pytest.skip("a minute boundary fell inside the test")
    assert [m.minute for m in window] == [now - timedelta(minutes=b) for b in range(59, -1, -1)]
    found = {round((now - m.minute) / timedelta(minutes=1)): m for m in window}
    assert found[0] == MinuteThroughput(now, 5, 1)
    assert found[2] == MinuteThroughput(now - timedelta(minutes=2), 1, 4)
    assert found[5] == MinuteThroughput(now - timedelta(minutes=5), 8, 7)
    assert sum(m.submitted for m in window) == 14  # not the hour-old row, nor the neighbour's
    assert all(m.minute.tzinfo is UTC for m in window)
    assert [m.minute for m in await repository.throughput(tenant, minutes=1)] == [now]
    assert len(await repository.throughput(tenant, minutes=1440)) == 1440
    empty = await repository.throughput(tenant_name(), minutes=5)
    assert [(m.submitted, m.completed) for m in empty] == [(0, 0)] * 5


async def explain(direct: Settings, sql: str, args: object) -> list[dict[str, object]]:
    async with one_connection(direct.database) as cursor:
        await cursor.execute(f"EXPLAIN {sql}", args)
        names = [column[0].lower() for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


async def test_the_statements_read_by_primary_key(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    # With more rows than a page or two, as a real table has (a tiny one is scanned instead).
    tenant = tenant_name()
    await repository.create_many(new_tasks(300, tenant))
    await repository.create_many(new_tasks(300, tenant_name()))
    ids = [str(uuid.uuid4()) for _ in range(3)]
    await repository.create_many([NewTask(i, "t", "d", None, tenant=tenant) for i in ids])
    token = "t" * 32
    await query(
        direct.database,
        f"UPDATE tasks SET claim_token = %s, status = 'COMPLETED' WHERE id IN ({', '.join(['%s'] * 3)})",
        token,
        *ids,
    )
    for plan in await explain(direct, *throughput.completed(ids, token)):
        if plan["table"] == "tasks":
            assert plan["key"] == "PRIMARY", plan
            assert int(str(plan["rows"])) <= len(ids), plan
    plans = await explain(direct, *throughput.window_statement(tenant, 60))
    [read] = [plan for plan in plans if plan["table"] == "t"]
    assert read["key"] == "PRIMARY", read
    assert read["type"] == "range", read
    [read] = await explain(direct, throughput.PURGE, (tenant, 100))
    assert read["key"] == "PRIMARY", read


async def test_the_purge_takes_minutes_a_day_old_in_bounded_batches(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    tenants = [tenant_name(), tenant_name()]
    for tenant in tenants:
        for back_minutes, shard in [(2 * 1440, 0), (1441, 0), (1441, 1), (1439, 0), (0, 0)]:
            await query(
                direct.database,
                "INSERT INTO task_throughput (tenant, minute, shard, submitted) VALUES (%s,"
                " UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND"
                " - INTERVAL %s MINUTE, %s, 1)",
                tenant,
                back_minutes,
                shard,
            )
    deleted = [await repository.purge_throughput(limit=4)]
    while deleted[-1]:
        deleted.append(await repository.purge_throughput(limit=4))
    assert deleted[0] == 4  # bounded
    assert sum(deleted) == 6  # three old rows each (the other tests write recent ones)
    for tenant in tenants:
        rows = await query(
            direct.database,
            "SELECT TIMESTAMPDIFF(MINUTE, minute, UTC_TIMESTAMP()) FROM task_throughput"
            " WHERE tenant = %s ORDER BY minute",
            tenant,
        )
        assert [int(row[0]) for row in rows] == [1439, 0], tenant  # the last day stays
