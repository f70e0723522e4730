"""The task resource's storage on the real server: events written with their transitions,
cancel against completion, idempotency keys under concurrency, the list's plans and the purge."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from common.errors import IdempotencyKeyReused
from common.mysql import Database, MySQLTaskRepository
from common.mysql.repository import _list_statement
from common.mysql.schema import one_connection
from common.settings import Settings
from common.tasks import EventKind, IdempotencyKey, NewTask, TaskQuery, TaskStatus
from testkit.sql import query

pytestmark = pytest.mark.integration


def new_task(title: str = "t") -> NewTask:
    return NewTask(str(uuid.uuid4()), title, "d", None)


def key(name: str, body: str = "body", ttl_seconds: float = 3600) -> IdempotencyKey:
    return IdempotencyKey("", name, hashlib.sha256(body.encode()).digest(), ttl_seconds)


async def kinds(repository: MySQLTaskRepository, task_id: str) -> list[EventKind]:
    return [event.kind for event in await repository.events_after(task_id, 0, limit=100)]


async def test_every_transition_writes_its_event(repository: MySQLTaskRepository) -> None:
    task = new_task()
    await repository.create(task)
    await repository.claim(task.task_id, lease_seconds=60, steal=False)
    assert await repository.release_for_retry(task.task_id, "boom")
    await repository.claim(task.task_id, lease_seconds=60, steal=False)
    assert await repository.fail(task.task_id, "boom again")
    assert await repository.reset_failed(task.task_id) is not None
    await repository.claim(task.task_id, lease_seconds=60, steal=False)
    assert await repository.complete(task.task_id)

    events = await repository.events_after(task.task_id, 0, limit=100)
    assert [e.kind for e in events] == [
        EventKind.CREATED,
        EventKind.STARTED,
        EventKind.RETRY_SCHEDULED,
        EventKind.STARTED,
        EventKind.FAILED,
        EventKind.REDRIVEN,
        EventKind.STARTED,
        EventKind.COMPLETED,
    ]
    assert [e.status for e in events][-2:] == [TaskStatus.PROCESSING, TaskStatus.COMPLETED]
    assert [e.attempts for e in events] == [0, 1, 1, 2, 2, 0, 1, 1]
    assert [e.error for e in events if e.error] == ["boom", "boom again"]
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)
    record = await repository.get(task.task_id)
    assert record is not None
    assert record.started_at is not None
    assert events[-1].created_at == record.updated_at
    latest = await repository.latest_event(task.task_id)
    assert latest == events[-1]


async def test_a_move_that_does_not_happen_writes_no_event(
    repository: MySQLTaskRepository,
) -> None:
    task = new_task()
    await repository.create(task)
    assert not await repository.complete(task.task_id)  # not PROCESSING
    assert not await repository.fail(task.task_id, "x")
    assert await repository.reset_failed(task.task_id) is None
    assert await kinds(repository, task.task_id) == [EventKind.CREATED]


async def test_cancel_moves_pending_and_processing_and_leaves_final_tasks(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    pending, processing, done = new_task(), new_task(), new_task()
    await repository.create_many([pending, processing, done])
    await repository.claim(processing.task_id, lease_seconds=60, steal=False)
    await repository.claim(done.task_id, lease_seconds=60, steal=False)
    await repository.complete(done.task_id)

    first = await repository.cancel(pending.task_id)
    second = await repository.cancel(processing.task_id)
    third = await repository.cancel(done.task_id)

    assert first is not None
    assert second is not None
    assert third is not None
    assert (first.previous, first.cancelled) == (TaskStatus.PENDING, True)
    assert (second.previous, second.cancelled) == (TaskStatus.PROCESSING, True)
    assert (third.previous, third.cancelled) == (TaskStatus.COMPLETED, False)
    assert first.record.status is second.record.status is TaskStatus.CANCELLED
    assert third.record.status is TaskStatus.COMPLETED
    assert await repository.cancel(str(uuid.uuid4())) is None
    # Nothing left for the outbox to send: the row leaves the dispatcher's range.
    [(dispatched,)] = await query(
        direct.database, "SELECT dispatched_at FROM tasks WHERE id = %s", pending.task_id
    )
    assert dispatched is not None
    # Cancelled is final: no claim, completion, retry or second cancel moves it again.
    claim = await repository.claim(processing.task_id, lease_seconds=60, steal=True)
    assert claim.result.value == "already_final"
    assert not await repository.complete(processing.task_id)
    assert not await repository.release_for_retry(processing.task_id, "late")
    again = await repository.cancel(processing.task_id)
    assert again is not None
    assert not again.cancelled
    assert await kinds(repository, processing.task_id) == [
        EventKind.CREATED,
        EventKind.STARTED,
        EventKind.CANCELLED,
    ]


@pytest.fixture
async def second_repository(direct: Settings) -> AsyncIterator[MySQLTaskRepository]:
    """Another pool on the same database: the race's two sides on their own connections."""
    database = Database(direct)
    await database.start()
    yield MySQLTaskRepository(database)
    await database.close()


async def test_a_cancel_racing_a_completion_has_one_winner(
    repository: MySQLTaskRepository, second_repository: MySQLTaskRepository
) -> None:
    tasks = [new_task() for _ in range(60)]
    await repository.create_many(tasks)
    outcomes = {"completed": 0, "cancelled": 0}
    for task in tasks:
        await repository.claim(task.task_id, lease_seconds=60, steal=False)
        completed, cancellation = await asyncio.gather(
            repository.complete(task.task_id), second_repository.cancel(task.task_id)
        )
        assert cancellation is not None
        record = await repository.get(task.task_id)
        assert record is not None
        # Exactly one of them moved the task, and the row says which.
        assert completed != cancellation.cancelled
        expected = TaskStatus.COMPLETED if completed else TaskStatus.CANCELLED
        assert record.status is expected
        finals = [k for k in await kinds(repository, task.task_id) if k is not EventKind.STARTED]
        assert finals == [EventKind.CREATED, EventKind(expected.value.lower())]
        outcomes["completed" if completed else "cancelled"] += 1
    assert sum(outcomes.values()) == len(tasks)


async def test_an_idempotency_key_makes_one_task_and_replays_it(
    repository: MySQLTaskRepository,
) -> None:
    name = f"k-{uuid.uuid4()}"
    first_task = new_task("first")
    record, replayed = await repository.create_idempotent(first_task, key(name))
    assert (record.task_id, replayed) == (first_task.task_id, False)

    again, replayed = await repository.create_idempotent(new_task("again"), key(name))
    assert (again.task_id, replayed) == (first_task.task_id, True)
    assert again.title == "first"
    with pytest.raises(IdempotencyKeyReused):
        await repository.create_idempotent(new_task(), key(name, body="another body"))
    # Another client's key of the same name is another key.
    other = new_task()
    theirs, replayed = await repository.create_idempotent(
        other, IdempotencyKey("tenant-b", name, key(name).fingerprint, 3600)
    )
    assert (theirs.task_id, replayed) == (other.task_id, False)


async def test_concurrent_requests_with_one_key_make_one_task(
    repository: MySQLTaskRepository, second_repository: MySQLTaskRepository
) -> None:
    name = f"k-{uuid.uuid4()}"
    tasks = [new_task(f"try {n}") for n in range(12)]
    results = await asyncio.gather(
        *(
            (repository if n % 2 else second_repository).create_idempotent(task, key(name))
            for n, task in enumerate(tasks)
        )
    )
    assert len({record.task_id for record, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 11
    ids = [task.task_id for task in tasks]
    rows = await repository.get_many(ids)
    assert sum(row is not None for row in rows) == 1


async def test_an_expired_key_is_free_again_and_purged_in_bounded_batches(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    name = f"k-{uuid.uuid4()}"
    old = new_task()
    await repository.create_idempotent(old, key(name, ttl_seconds=0.001))
    await asyncio.sleep(0.01)  # the key's 1 ms lifetime, not a synchronisation
    fresh = new_task()
    record, replayed = await repository.create_idempotent(fresh, key(name, body="new"))
    assert (record.task_id, replayed) == (fresh.task_id, False)

    for n in range(5):
        await repository.create_idempotent(new_task(), key(f"{name}-{n}", ttl_seconds=0.001))
    await asyncio.sleep(0.01)
    assert await repository.purge_idempotency_keys(limit=2) == 2
    assert await repository.purge_idempotency_keys(limit=2) == 2
    assert await repository.purge_idempotency_keys(limit=2) == 1
    assert await repository.purge_idempotency_keys(limit=2) == 0
    [(left,)] = await query(
        direct.database, "SELECT COUNT(*) FROM idempotency_keys WHERE idem_key = %s", name
    )
    assert left == 1  # the live one stays


async def test_the_list_pages_newest_first_by_status_and_time(
    repository: MySQLTaskRepository,
) -> None:
    start = datetime.now(UTC)
    tasks = [new_task(f"page {n}") for n in range(7)]
    for task in tasks:  # one at a time: distinct created_at, in order
        await repository.create(task)
    for task in tasks[:3]:
        await repository.cancel(task.task_id)
    newest_first = [t.task_id for t in reversed(tasks)]

    seen: list[str] = []
    after = None
    while True:
        page, more = await repository.list_tasks(
            TaskQuery(created_after=start, after=after, limit=3)
        )
        seen += [r.task_id for r in page]
        if not more:
            break
        after = (page[-1].created_at, page[-1].task_id)
    assert seen == newest_first

    cancelled, _ = await repository.list_tasks(
        TaskQuery(statuses=frozenset({TaskStatus.CANCELLED}), created_after=start)
    )
    assert [r.task_id for r in cancelled] == newest_first[-3:]
    both, _ = await repository.list_tasks(
        TaskQuery(
            statuses=frozenset({TaskStatus.CANCELLED, TaskStatus.PENDING}),
            created_after=start,
            limit=5,
        )
    )
    assert [r.task_id for r in both] == newest_first[:5]
    before = tasks[2]
    record = await repository.get(before.task_id)
    assert record is not None
    older, _ = await repository.list_tasks(
        TaskQuery(created_after=start, created_before=record.created_at)
    )
    assert [r.task_id for r in older] == newest_first[-2:]


async def test_counts_name_every_status(repository: MySQLTaskRepository) -> None:
    before = await repository.count_by_status()
    assert set(before) == set(TaskStatus)
    task = new_task()
    await repository.create(task)
    await repository.cancel(task.task_id)
    after = await repository.count_by_status()
    assert after[TaskStatus.CANCELLED] == before[TaskStatus.CANCELLED] + 1
    assert after[TaskStatus.PENDING] == before[TaskStatus.PENDING]


@pytest.mark.parametrize(
    "query_",
    [
        TaskQuery(),
        TaskQuery(statuses=frozenset({TaskStatus.PENDING})),
        TaskQuery(after=(datetime(2030, 1, 1, tzinfo=UTC), str(uuid.uuid4()))),
        TaskQuery(
            statuses=frozenset({TaskStatus.COMPLETED}),
            created_after=datetime(2020, 1, 1, tzinfo=UTC),
            created_before=datetime(2030, 1, 1, tzinfo=UTC),
            after=(datetime(2029, 1, 1, tzinfo=UTC), str(uuid.uuid4())),
        ),
        TaskQuery(type="simulated"),
        TaskQuery(
            type="simulated",
            statuses=frozenset({TaskStatus.PENDING, TaskStatus.FAILED}),
            after=(datetime(2030, 1, 1, tzinfo=UTC), str(uuid.uuid4())),
        ),
    ],
    ids=["all", "status", "cursor", "status-range-cursor", "type", "type-statuses-cursor"],
)
async def test_each_list_statement_reads_an_index_without_sorting(
    repository: MySQLTaskRepository, direct: Settings, query_: TaskQuery
) -> None:
    # Enough rows that a table scan would be the cheap plan if the index were not usable.
    await repository.create_many([new_task(f"bulk {n}") for n in range(2000)])
    statuses = sorted(query_.statuses)
    sql, args = _list_statement(query_, statuses)
    async with one_connection(direct.database) as cursor:
        await cursor.execute(f"EXPLAIN {sql}", args)
        names = [column[0].lower() for column in cursor.description]
        [plan] = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
    expected = "idx_tasks_tenant_status_created" if statuses else "idx_tasks_tenant_created"
    if query_.type is not None:
        expected = "idx_tasks_tenant_type_created"  # its statuses filter that range's rows
    assert plan["key"] == expected, plan
    assert "filesort" not in (plan["extra"] or "").lower(), plan
    assert plan["type"] in ("ref", "range", "index"), plan


async def test_a_tenants_list_holds_only_its_own_tasks_from_its_own_index_range(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    mine = [replace(new_task(f"mine {n}"), tenant=tenant) for n in range(3)]
    await repository.create_many([new_task(f"other {n}") for n in range(500)])
    await repository.create_many([*mine, replace(new_task("elsewhere"), tenant="someone-else")])

    page, more = await repository.list_tasks(TaskQuery(tenant=tenant, limit=10))
    assert {record.task_id for record in page} == {task.task_id for task in mine}
    assert not more
    assert {record.tenant for record in page} == {tenant}
    assert not (await repository.list_tasks(TaskQuery(tenant="nobody")))[0]
    for statuses in ([], [TaskStatus.PENDING]):
        sql, args = _list_statement(TaskQuery(tenant=tenant), statuses)
        async with one_connection(direct.database) as cursor:
            await cursor.execute(f"EXPLAIN {sql}", args)
            names = [column[0].lower() for column in cursor.description]
            [plan] = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
        assert int(plan["rows"]) <= 10, plan  # the tenant's range, not the 500 others
