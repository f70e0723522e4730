"""The MySQL repository's batched statements on the real server, and the group-commit layer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from common.errors import DatabaseRefused
from common.mysql import GroupedTaskRepository, MySQLTaskRepository
from common.mysql.repository import ClaimRequest
from common.tasks import Claim, ClaimResult, NewTask, TaskStatus

pytestmark = pytest.mark.integration


def new_tasks(count: int) -> list[NewTask]:
    return [NewTask(str(uuid.uuid4()), f"t{n} ✓", "d", {"n": n}) for n in range(count)]


async def test_create_many_inserts_every_row_in_one_go(repository: MySQLTaskRepository) -> None:
    tasks = new_tasks(50)
    records = await repository.create_many(tasks)
    assert [r.task_id for r in records] == [t.task_id for t in tasks]
    stored = await repository.get(tasks[7].task_id)
    assert stored is not None
    assert (stored.title, stored.metadata, stored.status) == ("t7 ✓", {"n": 7}, TaskStatus.PENDING)


async def test_get_many_answers_in_the_order_asked(repository: MySQLTaskRepository) -> None:
    first, second = [t.task_id for t in await repository.create_many(new_tasks(2))]
    ghost = str(uuid.uuid4())

    records = await repository.get_many([second, ghost, first, second])

    assert [r.task_id if r else None for r in records] == [second, None, first, second]
    assert records[0] is not None
    assert records[0].metadata == {"n": 1}


async def test_claim_many_sorts_out_each_request(repository: MySQLTaskRepository) -> None:
    pending, held, stolen, done = [t.task_id for t in await repository.create_many(new_tasks(4))]
    await repository.claim_many([ClaimRequest(held), ClaimRequest(stolen)], lease_seconds=60)
    await repository.claim(done, lease_seconds=60, steal=False)
    assert await repository.complete(done)
    ghost = str(uuid.uuid4())

    claims = await repository.claim_many(
        [
            ClaimRequest(pending),
            ClaimRequest(pending),  # the same task twice in one batch: claimed once
            ClaimRequest(held),
            ClaimRequest(stolen, steal=True),
            ClaimRequest(done),
            ClaimRequest(ghost),
        ],
        lease_seconds=60,
    )

    assert [c.result for c in claims] == [
        ClaimResult.CLAIMED,
        ClaimResult.HELD_ELSEWHERE,
        ClaimResult.HELD_ELSEWHERE,
        ClaimResult.CLAIMED,
        ClaimResult.ALREADY_FINAL,
        ClaimResult.NOT_FOUND,
    ]
    assert (claims[0].attempts, claims[3].attempts) == (1, 2)


async def test_a_batch_of_one_task_needs_no_read_back(repository: MySQLTaskRepository) -> None:
    [task_id] = [t.task_id for t in await repository.create_many(new_tasks(1))]

    first = await repository.claim_many(
        [ClaimRequest(task_id), ClaimRequest(task_id)], lease_seconds=60
    )
    stolen = await repository.claim(task_id, lease_seconds=60, steal=True)

    assert [c.result for c in first] == [ClaimResult.CLAIMED, ClaimResult.HELD_ELSEWHERE]
    assert (first[0].attempts, stolen.result, stolen.attempts) == (1, ClaimResult.CLAIMED, 2)
    assert await repository.claim(task_id, lease_seconds=60, steal=False) == Claim(
        ClaimResult.HELD_ELSEWHERE
    )
    assert await repository.complete_many([(task_id, None), (task_id, None)]) == [True, False]
    assert await repository.complete_many([(task_id, None)]) == [False]
    record = await repository.get(task_id)
    assert record is not None
    assert (record.status, record.attempts) == (TaskStatus.COMPLETED, 2)


async def test_complete_many_completes_each_task_once(repository: MySQLTaskRepository) -> None:
    first, second, pending = [t.task_id for t in await repository.create_many(new_tasks(3))]
    await repository.claim_many([ClaimRequest(first), ClaimRequest(second)], lease_seconds=60)

    # Each with its result; the first time a task is named is the one that counts.
    completions = [(first, '{"n": 1}'), (first, '{"n": 2}'), (second, None), (pending, "[]")]
    assert await repository.complete_many(completions) == [True, False, True, False]
    record = await repository.get(first)
    assert record is not None
    assert record.completed_at is not None
    assert (record.result, record.progress) == ({"n": 1}, 1.0)
    other = await repository.get(second)
    assert other is not None
    assert other.result is None
    untouched = await repository.get(pending)
    assert untouched is not None
    assert (untouched.status, untouched.result) == (TaskStatus.PENDING, None)
    assert await repository.complete_many([(first, None), (second, "1")]) == [False, False]
    again = await repository.get(first)
    assert again is not None
    assert again.completed_at == record.completed_at


async def test_grouped_repository_serves_concurrent_callers(
    repository: MySQLTaskRepository,
) -> None:
    grouped = GroupedTaskRepository(repository, timeout=5, max_batch=16)
    tasks = new_tasks(100)
    created = await asyncio.gather(*(grouped.create(task) for task in tasks))
    ids = [record.task_id for record in created]
    claims = await asyncio.gather(
        *(grouped.claim(i, lease_seconds=60, steal=False) for i in ids + ids[:10])
    )
    assert sum(c.result is ClaimResult.CLAIMED for c in claims) == 100
    completions = await asyncio.gather(*(grouped.complete(i) for i in ids))
    assert all(completions)
    await grouped.mark_dispatched(ids)
    await grouped.flush_marks()
    records = await asyncio.gather(*(grouped.get(i) for i in [*ids, str(uuid.uuid4())]))
    assert [r.task_id if r else None for r in records[:-1]] == ids
    assert all(r is not None and r.status is TaskStatus.COMPLETED for r in records[:-1])
    assert records[-1] is None


def nested(levels: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


async def test_a_row_the_server_refuses_fails_only_its_own_caller(
    repository: MySQLTaskRepository,
) -> None:
    # The API refuses metadata nested over 30 levels; the databases draw the line higher
    # (MariaDB 32, MySQL 101). Past that, the INSERT that carries it is refused whole.
    grouped = GroupedTaskRepository(repository, timeout=5, max_batch=16)
    tasks = new_tasks(40)
    bad = NewTask(str(uuid.uuid4()), "too deep", "d", nested(120))
    tasks.insert(20, bad)
    deepest = NewTask(str(uuid.uuid4()), "deep", "d", nested(30))
    tasks.append(deepest)

    results = await asyncio.gather(
        *(grouped.create(task) for task in tasks), return_exceptions=True
    )

    refused = [
        task
        for task, result in zip(tasks, results, strict=True)
        if isinstance(result, BaseException)
    ]
    assert refused == [bad]
    assert isinstance(results[20], DatabaseRefused)
    stored = await repository.get_many([task.task_id for task in tasks])
    assert [record is None for record in stored].count(True) == 1
    assert stored[20] is None
    assert stored[-1] is not None
    assert stored[-1].metadata == nested(30)
