"""task_counts on the real server: every transition keeps it equal to a COUNT(*) of the rows,
alone and under concurrent writers on several pools, each count statement touches only its
own rows, and the stats read it."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.mysql import Database, MySQLTaskRepository, counts
from common.mysql.connection import Statement
from common.mysql.repository import ClaimRequest
from common.mysql.schema import one_connection
from common.settings import Settings
from common.tasks import IdempotencyKey, NewTask, TaskStatus
from testkit.sql import query

pytestmark = pytest.mark.integration


def new_tasks(count: int) -> list[NewTask]:
    return [NewTask(str(uuid.uuid4()), f"t{n}", "d", None) for n in range(count)]


async def counted(direct: Settings) -> dict[TaskStatus, int]:
    """What a COUNT(*) over the rows says, every status present."""
    rows = await query(direct.database, "SELECT status, COUNT(*) FROM tasks GROUP BY status")
    found = {TaskStatus(status): int(n) for status, n in rows}
    return {status: found.get(status, 0) for status in TaskStatus}


async def assert_exact(repository: MySQLTaskRepository, direct: Settings) -> None:
    assert await repository.count_by_status() == await counted(direct)


async def test_every_transition_keeps_the_counts_exact(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    await assert_exact(repository, direct)
    batch = new_tasks(8)
    await repository.create_many(batch)
    [single] = new_tasks(1)
    await repository.create(single)
    [keyed] = new_tasks(1)
    key = IdempotencyKey("", f"k-{uuid.uuid4()}", hashlib.sha256(b"b").digest(), 3600)
    await repository.create_idempotent(keyed, key)
    await repository.create_idempotent(NewTask(str(uuid.uuid4()), "t", "d", None), key)  # replay
    await assert_exact(repository, direct)

    ids = [task.task_id for task in batch]
    # A batch that names one task twice, and one task claimed alone.
    requests = [ClaimRequest(task_id) for task_id in ids[:5]] + [ClaimRequest(ids[0])]
    await repository.claim_many(requests, lease_seconds=60)
    await repository.claim(single.task_id, lease_seconds=60, steal=False)
    await assert_exact(repository, direct)
    # A redelivery taking over a held task, and a claim that finds nothing to claim.
    assert (await repository.claim(ids[1], lease_seconds=60, steal=True)).attempts == 2
    await repository.claim(ids[2], lease_seconds=60, steal=False)
    await assert_exact(repository, direct)

    # A batch with a task that is not PROCESSING: only the others move.
    await repository.complete_many([(ids[0], None), (ids[1], '{"a": 1}'), (ids[7], None)])
    assert await repository.release_for_retry(ids[2], "again")
    assert await repository.fail(ids[3], "boom")
    assert not await repository.fail(ids[0], "already COMPLETED")
    await assert_exact(repository, direct)

    assert await repository.reset_failed(ids[3]) is not None
    for task_id in (ids[4], ids[5], ids[0], str(uuid.uuid4())):  # PROCESSING, PENDING, final
        await repository.cancel(task_id)
    await assert_exact(repository, direct)
    totals = await repository.count_by_status()
    assert totals[TaskStatus.CANCELLED] == 2
    assert totals[TaskStatus.COMPLETED] == 2


@pytest.fixture(scope="module")
async def pools(direct: Settings) -> AsyncIterator[list[MySQLTaskRepository]]:
    """Three more pools on the same database: writers on many connections, many shards."""
    databases = [Database(direct) for _ in range(3)]
    for database in databases:
        await database.start()
    yield [MySQLTaskRepository(database) for database in databases]
    for database in databases:
        await database.close()


async def _work_on(repositories: list[MySQLTaskRepository], task_id: str, seed: int) -> None:
    """One task's life, each step on a pool picked at random: claimed, maybe taken over,
    then completed, retried, failed, or cancelled (racing the others)."""
    rng = random.Random(seed)

    def pick() -> MySQLTaskRepository:
        return rng.choice(repositories)

    await pick().claim(task_id, lease_seconds=60, steal=False)
    if rng.random() < 0.2:
        await pick().claim(task_id, lease_seconds=60, steal=True)
    ending = rng.randrange(4)
    steps: list[Any] = [pick().cancel(task_id)] if rng.random() < 0.3 else []
    if ending == 0:
        steps.append(pick().complete(task_id))
    elif ending == 1:
        steps.append(pick().release_for_retry(task_id, "retry"))
    elif ending == 2:
        steps.append(pick().fail(task_id, "boom"))
    await asyncio.gather(*steps)


async def test_concurrent_writers_on_many_connections_keep_the_counts_exact(
    repository: MySQLTaskRepository, pools: list[MySQLTaskRepository], direct: Settings
) -> None:
    repositories = [repository, *pools]
    tasks = new_tasks(400)
    await asyncio.gather(
        *(repositories[n % 4].create_many(tasks[n : n + 10]) for n in range(0, 400, 10))
    )
    await asyncio.gather(
        *(_work_on(repositories, task.task_id, seed) for seed, task in enumerate(tasks))
    )
    await assert_exact(repository, direct)
    # Several shards took part: the writers did not all queue on one row.
    [(shards,)] = await query(
        direct.database, "SELECT COUNT(DISTINCT shard) FROM task_counts WHERE n <> 0"
    )
    assert shards > 1


def count_statement(name: str, ids: list[str]) -> Statement:
    token = "t" * 32
    if name == "created":
        return counts.created(["", "alice", "alice"])
    if name == "moved":
        return counts.moved(ids, token, TaskStatus.PENDING, TaskStatus.PROCESSING)
    return counts.moved_from_variable(ids[:1], token, "@was", TaskStatus.CANCELLED)


@pytest.mark.parametrize("name", ["created", "moved", "moved-from-variable"])
async def test_each_count_statement_reads_its_rows_by_primary_key(
    repository: MySQLTaskRepository, direct: Settings, name: str
) -> None:
    # A full scan would lock every shard's rows (REPEATABLE READ keeps the locks it took),
    # and every transition would queue behind every other one. A move reads the rows it
    # moved by primary key, and a two-row table of its two statuses; nothing else.
    ids = [str(uuid.uuid4()) for _ in range(3)]
    statement = count_statement(name, ids)
    sql, args = statement
    # With more rows than a page or two, as a real table has (a tiny one is scanned instead).
    await repository.create_many([*new_tasks(300), *(NewTask(i, "t", "d", None) for i in ids)])
    async with one_connection(direct.database) as cursor:
        # As a transition leaves them: its token in the rows it moved (a row read as a
        # constant that does not match would leave nothing to plan).
        await cursor.execute(
            f"UPDATE tasks SET claim_token = %s WHERE id IN ({', '.join(['%s'] * len(ids))})",
            ["t" * 32, *ids],
        )
        # @was as cancel sets it: from a status column (a literal has another collation).
        await cursor.execute(
            "SET @was = (SELECT status FROM task_counts WHERE status = 'PENDING' LIMIT 1)"
        )
        await cursor.execute(f"EXPLAIN {sql}", args)
        names = [column[0].lower() for column in cursor.description]
        plans = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
    for plan in plans:
        table = str(plan["table"] or "")
        if table == "tasks" or table == "t":
            assert plan["key"] == "PRIMARY", plan
            assert plan["type"] in ("const", "range", "eq_ref"), plan
            assert int(plan["rows"]) <= len(ids), plan
        elif table == "task_counts":
            assert int(plan["rows"] or 0) <= 1, plan  # the row it inserts, nothing read
        else:  # the statuses' derived table and its UNION parts: two rows, no table read
            assert int(plan["rows"] or 0) <= 2, plan
            assert plan["key"] is None, plan
    assert any(str(plan["table"]) in ("t", "task_counts") for plan in plans), plans


async def test_each_tenant_is_counted_apart_even_in_one_batch(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    tenants = ["", "alice", "bob.example-2"]
    tasks = [
        NewTask(str(uuid.uuid4()), f"t{n}", "d", None, tenant=tenants[n % 3]) for n in range(12)
    ]
    ids = [task.task_id for task in tasks]
    await repository.create_many(tasks[:9])  # three tenants in one batch
    await repository.create(tasks[9])
    await repository.claim_many([ClaimRequest(task_id) for task_id in ids[:8]], lease_seconds=60)
    await repository.complete_many([(task_id, None) for task_id in ids[:5]])
    assert await repository.fail(ids[5], "boom")
    await repository.cancel(ids[6])  # PROCESSING
    await repository.cancel(ids[8])  # PENDING
    assert await repository.reset_failed(ids[5]) is not None
    for tenant in (*tenants, "nobody"):
        rows = await query(
            direct.database,
            "SELECT status, COUNT(*) FROM tasks WHERE tenant = %s GROUP BY status",
            tenant,
        )
        found = {TaskStatus(status): int(n) for status, n in rows}
        expected = {status: found.get(status, 0) for status in TaskStatus}
        assert await repository.count_by_status(tenant) == expected, tenant
    assert (await repository.count_by_status("alice"))[TaskStatus.COMPLETED] == 2
