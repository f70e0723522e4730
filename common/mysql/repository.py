"""The tasks table: every statement the TaskRepository port needs, in MySQL.

No ORM: each operation is one or two statements. Statements that many callers make at once
(create, read, claim, complete) come in batch forms (`*_many`) that `GroupedTaskRepository`
shares between concurrent callers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from common.errors import DatabaseUnavailable, IdempotencyKeyReused
from common.mysql import counts, throughput
from common.mysql.connection import Database, Result, Statement, Transaction
from common.mysql.errors import is_deadlock
from common.mysql.events import (
    EVENT_COLUMNS,
    event_of,
    event_row_of,
    events_statement,
    in_clause,
    tenant_events_statement,
)
from common.mysql.webhooks import callback_of, deliveries_statement, latest_statement
from common.ports import PublishOne
from common.tasks import (
    FINAL_STATUSES,
    Cancellation,
    Claim,
    ClaimResult,
    EventKind,
    EventRow,
    IdempotencyKey,
    MinuteThroughput,
    NewTask,
    TaskEvent,
    TaskQuery,
    TaskRecord,
    TaskStatus,
)

logger = logging.getLogger(__name__)

_DEADLOCK_ATTEMPTS = 3
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    task_id: str
    steal: bool = False


_COLUMNS = (
    "id, title, description, status, metadata, attempts, last_error,"
    " created_at, updated_at, completed_at, started_at,"
    " type, payload, timeout_seconds, result, progress, progress_note, run_at, callback_url,"
    " tenant"
)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _json(value: str | bytes | None) -> Any:
    return None if value is None else orjson.loads(value)


def _json_text(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _record(row: tuple[Any, ...]) -> TaskRecord:
    task_id, title, description, status, metadata, attempts, last_error, *rest = row
    times, (task_type, payload, timeout_seconds, result, progress, note, run_at, url, tenant) = (
        rest[:4],
        rest[4:],
    )
    created_at, updated_at, completed_at, started_at = (_utc(value) for value in times)
    assert created_at is not None
    assert updated_at is not None
    return TaskRecord(
        task_id=task_id,
        title=title,
        description=description,
        status=TaskStatus(status),
        metadata=_json(metadata),
        attempts=attempts,
        last_error=last_error,
        created_at=created_at,
        updated_at=updated_at,
        completed_at=completed_at,
        started_at=started_at,
        type=task_type,
        payload=_json(payload),
        timeout_seconds=timeout_seconds,
        result=_json(result),
        progress=progress,
        progress_note=note,
        run_at=_utc(run_at),
        callback=None if url is None else callback_of(url, None),
        tenant=tenant,
    )


def _claim_of(row: tuple[Any, ...] | None, token: str, already_granted: bool) -> Claim:
    if row is None:
        return Claim(ClaimResult.NOT_FOUND)
    status, attempts, claim_token = row
    if status == "PROCESSING" and claim_token == token and not already_granted:
        return Claim(ClaimResult.CLAIMED, attempts=attempts)
    if TaskStatus(status) in FINAL_STATUSES:
        return Claim(ClaimResult.ALREADY_FINAL)
    return Claim(ClaimResult.HELD_ELSEWHERE)


def _list_index(query: TaskQuery, statuses: Sequence[TaskStatus]) -> str:
    if query.type is not None:
        return "idx_tasks_tenant_type_created"
    return "idx_tasks_tenant_status_created" if statuses else "idx_tasks_tenant_created"


def _list_statement(query: TaskQuery, statuses: Sequence[TaskStatus]) -> tuple[str, list[object]]:
    """One index range of the tenant's rows, read backwards: (type or status,) created_at,
    id; `statuses` (none: all) are one status, or with a type those the range's rows are
    filtered on."""
    conditions: list[str] = ["tenant = %s"]
    args: list[object] = [query.tenant]
    if query.type is not None:
        conditions.append("type = %s")
        args.append(query.type)
    if statuses:
        conditions.append(f"status IN ({in_clause(len(statuses))})")
        args += [status.value for status in statuses]
    if query.created_after is not None:
        conditions.append("created_at >= %s")
        args.append(_naive(query.created_after))
    if query.created_before is not None:
        conditions.append("created_at < %s")
        args.append(_naive(query.created_before))
    if query.after is not None:
        # Written so that both servers see a range on created_at (a row comparison is not
        # always one), then the tie on id.
        created_at, task_id = query.after
        conditions.append("created_at <= %s AND (created_at < %s OR id < %s)")
        args += [_naive(created_at), _naive(created_at), task_id]
    where = f" WHERE {' AND '.join(conditions)}"
    args.append(query.limit + 1)
    return (
        f"SELECT {_COLUMNS} FROM tasks FORCE INDEX ({_list_index(query, statuses)}){where}"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " ORDER BY created_at DESC, id DESC LIMIT %s",
        args,
    )


def _naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _insert_statements(tasks: Sequence[NewTask], now: datetime) -> list[Statement]:
    """The tasks' rows, their count and their `created` events."""
    naive = now.replace(tzinfo=None)
    values: list[object] = []
    events: list[object] = []
    for task in tasks:
        values += [task.task_id, task.title, task.description, _json_text(task.metadata)]
        values += [task.type, _json_text(task.payload), task.timeout_seconds]
        values += [None if task.run_at is None else _naive(task.run_at), task.callback_url]
        values += [naive, naive, task.tenant]
        events += [task.task_id, naive]
    rows = ", ".join(["(%s, %s, %s, 'PENDING', %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(tasks))
    return [
        (
            "INSERT INTO tasks (id, title, description, status, metadata, type, payload,"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
            " timeout_seconds, run_at, callback_url, created_at, updated_at, tenant)"
            f" VALUES {rows}",
            values,
        ),
        counts.created([task.tenant for task in tasks]),
        throughput.submitted([task.tenant for task in tasks]),
        (
            "INSERT INTO task_events (task_id, kind, status, attempts, created_at) VALUES "  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
            + ", ".join(["(%s, 'created', 'PENDING', 0, %s)"] * len(tasks)),
            events,
        ),
    ]


_SETTLED = "updated_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"


def _dispatch_select(due: str, order: str) -> str:
    return (
        f"SELECT {_COLUMNS} FROM tasks WHERE dispatched_at IS NULL AND {due}"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        f" AND status = 'PENDING' ORDER BY {order} LIMIT %s FOR UPDATE SKIP LOCKED"
    )


# The dispatcher's two ranges of idx_tasks_undispatched, each taking (min_age in
# microseconds, limit): the tasks to send at once, then the scheduled tasks that are due.
DISPATCH_SELECTS = (
    _dispatch_select(f"run_at IS NULL AND {_SETTLED}", "updated_at"),
    _dispatch_select(
        f"run_at <= UTC_TIMESTAMP(6) AND (run_at > updated_at OR {_SETTLED})", "run_at"
    ),
)

# And the wait until the next of those scheduled for later (the MIN read off that index).
NEXT_DUE_SELECT = (
    "SELECT TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), MIN(run_at)) FROM tasks"
    " WHERE dispatched_at IS NULL AND run_at > UTC_TIMESTAMP(6)"
)


def _claim_sql(ids: int, condition: str) -> str:
    """The claim of those of `ids` tasks that meet `condition`; its %s take the lease in
    microseconds, the claim's token, the ids, then the condition's own."""
    return (
        "UPDATE tasks SET status = 'PROCESSING', attempts = LAST_INSERT_ID(attempts + 1),"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
        " lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND,"
        " dispatched_at = COALESCE(dispatched_at, UTC_TIMESTAMP(6)),"
        " claim_token = %s, started_at = COALESCE(started_at, UTC_TIMESTAMP(6)),"
        " progress = NULL, progress_note = NULL"
        f" WHERE id IN ({in_clause(ids)}) AND {condition}"
    )


def _claims_of_one(requests: Sequence[ClaimRequest], *, attempts: int) -> list[Claim]:
    """All requests name the one task this statement claimed: the first gets it."""
    return [
        Claim(ClaimResult.CLAIMED, attempts=attempts)
        if index == 0
        else Claim(ClaimResult.HELD_ELSEWHERE)
        for index in range(len(requests))
    ]


class MySQLTaskRepository:
    """The TaskRepository port on the process's Database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def _rerun_deadlock_victims(self, run: Callable[[], Awaitable[T]], what: str) -> T:
        """`run()`; a statement or transaction the server chose as a deadlock victim was
        rolled back whole, so it is run again (up to three times in all)."""
        for attempt in range(_DEADLOCK_ATTEMPTS):
            try:
                return await run()
            except DatabaseUnavailable as exc:
                if not is_deadlock(exc) or attempt == _DEADLOCK_ATTEMPTS - 1:
                    raise
                logger.info(f"{what} retried after a deadlock", extra={"attempt": attempt + 1})
        raise AssertionError("unreachable")

    async def _execute(self, sql: str, args: Sequence[object]) -> int:
        """One autocommit statement; the rows it changed."""

        async def execute() -> int:
            async with self._database.cursor() as cursor:
                await cursor.execute(sql, args)
                return int(cursor.rowcount)

        return await self._rerun_deadlock_victims(execute, "statement")

    async def _in_transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """`work` in one interactive transaction."""

        async def transaction() -> T:
            async with self._database.transaction() as transaction:
                return await work(transaction)

        return await self._rerun_deadlock_victims(transaction, "transaction")

    async def _script(self, statements: Sequence[Statement]) -> list[Result]:
        """Database.script: one transaction in one round trip."""
        return await self._rerun_deadlock_victims(
            lambda: self._database.script(statements), "transaction"
        )

    async def _rows(self, statement: Statement) -> list[tuple[Any, ...]]:
        async with self._database.cursor() as cursor:
            await cursor.execute(*statement)
            return list(await cursor.fetchall())

    async def create(self, task: NewTask) -> TaskRecord:
        [record] = await self.create_many([task])
        return record

    async def create_many(self, tasks: Sequence[NewTask]) -> list[TaskRecord]:
        """Insert the tasks as PENDING and undispatched, with their `created` events, in one
        transaction: all or none."""
        now = datetime.now(UTC)
        await self._script(_insert_statements(tasks, now))
        return [TaskRecord.pending(task, now) for task in tasks]

    async def create_idempotent(
        self, task: NewTask, key: IdempotencyKey
    ) -> tuple[TaskRecord, bool]:
        """Create the task and store `key` with it in one transaction, unless the key (not
        expired) is stored already: then the task it names, and True (a replay).

        A request that comes while the first one with its key is being written waits on the
        key's row lock, then sees it: two requests never make two tasks. The same key with
        another body raises IdempotencyKeyReused.
        """
        now = datetime.now(UTC)
        naive = now.replace(tzinfo=None)
        ttl = int(key.ttl_seconds * 1_000_000)

        async def store(transaction: Transaction) -> str | None:
            # No DELETE of an expired key first: on a key not yet stored, two of those would
            # each take the gap lock the other's INSERT waits for (a deadlock). On a
            # duplicate, this INSERT waits for the first one's commit, then locks its row.
            inserted = await transaction.execute(
                "INSERT INTO idempotency_keys"
                " (client, idem_key, fingerprint, task_id, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s + INTERVAL %s MICROSECOND)"
                " ON DUPLICATE KEY UPDATE idem_key = idem_key",
                (key.client, key.key, key.fingerprint, task.task_id, naive, naive, ttl),
            )
            if not inserted:
                await transaction.execute(
                    "SELECT fingerprint, task_id, expires_at < UTC_TIMESTAMP(6)"
                    " FROM idempotency_keys WHERE client = %s AND idem_key = %s FOR UPDATE",
                    (key.client, key.key),
                )
                [(fingerprint, task_id, expired)] = await transaction.fetchall()
                if not expired:
                    if bytes(fingerprint) != key.fingerprint:
                        raise IdempotencyKeyReused(key.key)
                    return str(task_id)
                await transaction.execute(  # expired: the key is free again
                    "UPDATE idempotency_keys SET fingerprint = %s, task_id = %s,"
                    " created_at = %s, expires_at = %s + INTERVAL %s MICROSECOND"
                    " WHERE client = %s AND idem_key = %s",
                    (key.fingerprint, task.task_id, naive, naive, ttl, key.client, key.key),
                )
            for statement, args in _insert_statements([task], now):
                await transaction.execute(statement, args)
            return None

        replayed_id = await self._in_transaction(store)
        if replayed_id is None:
            return TaskRecord.pending(task, now), False
        record = await self.get(replayed_id)
        if record is None:  # tasks are never deleted; a key always names a stored task
            raise DatabaseUnavailable(f"idempotency key names a missing task {replayed_id}")
        return record, True

    async def purge_idempotency_keys(self, *, limit: int) -> int:
        """Delete up to `limit` expired keys, oldest first; how many went."""
        return await self._execute(
            "DELETE FROM idempotency_keys WHERE expires_at < UTC_TIMESTAMP(6)"
            " ORDER BY expires_at LIMIT %s",
            (limit,),
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        [record] = await self.get_many([task_id])
        return record

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        """The tasks in one SELECT, in the order asked (None where there is no such task)."""
        ids = sorted(set(task_ids))
        async with self._database.cursor() as cursor:
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({in_clause(len(ids))})",  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                ids,
            )
            records = [_record(row) for row in await cursor.fetchall()]
        found = {record.task_id: record for record in await self._with_callbacks(records)}
        return [found.get(task_id) for task_id in task_ids]

    async def _with_callbacks(self, records: list[TaskRecord]) -> list[TaskRecord]:
        """The records, those with a callback_url completed with their latest delivery (one
        more query, and only when there is one)."""
        urls = {r.task_id: r.callback.url for r in records if r.callback is not None}
        if not urls:
            return records
        rows = {row[0]: row for row in await self._rows(latest_statement(sorted(urls)))}
        return [
            record
            if record.task_id not in urls
            else replace(
                record, callback=callback_of(urls[record.task_id], rows.get(record.task_id))
            )
            for record in records
        ]

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            # By primary key only: "AND dispatched_at IS NULL" would let the optimizer scan
            # idx_tasks_undispatched and lock the very gap new tasks are inserted into.
            await self._execute(
                "UPDATE tasks SET dispatched_at = COALESCE(dispatched_at, UTC_TIMESTAMP(6))"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                f" WHERE id IN ({in_clause(len(task_ids))})",
                list(task_ids),
            )

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        # READ COMMITTED for this transaction: under REPEATABLE READ its range scan would also
        # lock the gap where new tasks are inserted, holding up every insert (and deadlocking
        # some) while the messages are being published.
        async with self._database.transaction(isolation="READ COMMITTED") as transaction:
            # SKIP LOCKED: several API replicas dispatch side by side without sending the
            # same rows twice or waiting on each other. Two ranges of idx_tasks_undispatched:
            # the tasks to send at once, and the scheduled tasks that are due; those scheduled
            # for later are in neither. A row written in the last `min_age` seconds is left
            # alone (the API process that wrote it is publishing it), unless it was written
            # before it was due: a scheduled task is published by the dispatcher alone.
            min_age = int(min_age_seconds * 1_000_000)
            records: list[TaskRecord] = []
            for select in DISPATCH_SELECTS:
                await transaction.execute(select, (min_age, limit - len(records)))
                records += [_record(row) for row in await transaction.fetchall()]
                if len(records) >= limit:
                    break
            # All at once: the publisher writes them together and each waits for its own
            # confirm, so a pass after an outage takes one round trip, not one per task.
            published = await asyncio.gather(*(publish(record) for record in records))
            confirmed = [r.task_id for r, ok in zip(records, published, strict=True) if ok]
            if confirmed:
                await transaction.execute(
                    "UPDATE tasks SET dispatched_at = UTC_TIMESTAMP(6)"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                    f" WHERE id IN ({in_clause(len(confirmed))})",
                    confirmed,
                )
        return len(confirmed)

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest scheduled task that is not due yet (None: there is none)."""
        async with self._database.cursor() as cursor:
            await cursor.execute(NEXT_DUE_SELECT)
            [(micros,)] = await cursor.fetchall()
        return None if micros is None else max(0.0, int(micros) / 1_000_000)

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        [claim] = await self.claim_many([ClaimRequest(task_id, steal)], lease_seconds=lease_seconds)
        return claim

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, lease_seconds: float
    ) -> list[Claim]:
        """Claim a batch in one transaction, then read back which rows carry its token.

        The claim also sets the outbox mark: a worker holding the message proves it was
        dispatched, so the dispatcher will not send it again. A task asked for twice in one
        batch is claimed for the first request only.
        """
        ids = sorted({request.task_id for request in requests})
        stealing = sorted({r.task_id for r in requests if r.steal}) or [""]
        token = uuid.uuid4().hex
        lease = int(lease_seconds * 1_000_000)
        statements = [
            # LAST_INSERT_ID(expr) hands the new attempt count back in the OK packet: for a
            # batch of one task (the usual case below saturation) no read-back is needed.
            # PENDING rows first, then PROCESSING ones whose lease ran out (or that a
            # redelivery takes over), in a statement of their own: only the first move
            # changes the counts (counted before the second marks its rows with the token).
            (_claim_sql(len(ids), "status = 'PENDING'"), [lease, token, *ids]),
            counts.moved(ids, token, TaskStatus.PENDING, TaskStatus.PROCESSING),
            (
                _claim_sql(
                    len(ids),
                    "status = 'PROCESSING' AND NOT claim_token <=> %s AND (lease_expires_at"
                    " IS NULL OR lease_expires_at < UTC_TIMESTAMP(6)"
                    f" OR id IN ({in_clause(len(stealing))}))",
                ),
                [lease, token, *ids, token, *stealing],
            ),
            events_statement(EventKind.STARTED, ids, token=token),
        ]
        state: Statement = (
            f"SELECT id, status, attempts, claim_token FROM tasks WHERE id IN ({in_clause(len(ids))})",  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
            ids,
        )
        if len(ids) > 1:
            statements.append(state)
        from_pending, _, from_processing, *_, found = await self._script(statements)
        if len(ids) == 1:
            for claimed in (from_pending, from_processing):
                if claimed.rowcount == 1:
                    return _claims_of_one(requests, attempts=claimed.last_insert_id)
            found = Result(0, await self._rows(state))  # not claimed: the row says why
        rows = {row[0]: row[1:] for row in found.rows}
        claims: list[Claim] = []
        granted: set[str] = set()
        for request in requests:
            claims.append(_claim_of(rows.get(request.task_id), token, request.task_id in granted))
            if claims[-1].result is ClaimResult.CLAIMED:
                granted.add(request.task_id)
        return claims

    async def complete(self, task_id: str, result: str | None = None) -> bool:
        [completed] = await self.complete_many([(task_id, result)])
        return completed

    async def complete_many(self, completions: Sequence[tuple[str, str | None]]) -> list[bool]:
        """PROCESSING -> COMPLETED for a batch, each with its result (JSON text, or None);
        True for each task this call completed (the first time it is named, if named twice)."""
        results: dict[str, str] = {}
        for task_id, result in reversed(completions):  # the first one named wins
            if result is not None:
                results[task_id] = result
            else:
                results.pop(task_id, None)
        ids = sorted({task_id for task_id, _ in completions})
        token = uuid.uuid4().hex
        setting, values = "NULL", []
        if results:
            setting = "CASE id" + " WHEN %s THEN %s" * len(results) + " END"
            values = [part for task_id, result in results.items() for part in (task_id, result)]
        statements = [
            (
                f"UPDATE tasks SET status = 'COMPLETED', result = {setting},"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                " completed_at = UTC_TIMESTAMP(6), progress = 1.0, progress_note = NULL,"
                " lease_expires_at = NULL, claim_token = %s"
                f" WHERE id IN ({in_clause(len(ids))}) AND status = 'PROCESSING'",
                [*values, token, *ids],
            ),
            counts.moved(ids, token, TaskStatus.PROCESSING, TaskStatus.COMPLETED),
            throughput.completed(ids, token),
            events_statement(EventKind.COMPLETED, ids, token=token),
            deliveries_statement(ids, token=token),
        ]
        if len(ids) > 1:  # which of them this statement completed
            statements.append(
                (
                    f"SELECT id FROM tasks WHERE id IN ({in_clause(len(ids))})"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                    " AND claim_token = %s AND status = 'COMPLETED'",
                    [*ids, token],
                )
            )
        changed, *_, found = await self._script(statements)
        if len(ids) == 1:
            found = Result(changed.rowcount, [(ids[0],)] if changed.rowcount else [])
        completed = {row[0] for row in found.rows}
        answers = []
        for task_id, _ in completions:
            answers.append(task_id in completed)
            completed.discard(task_id)
        return answers

    async def report_progress(
        self, task_id: str, *, attempt: int, progress: float, note: str | None
    ) -> bool:
        """The running attempt's progress and note, with a `progress` event; False when the
        task is no longer PROCESSING in that attempt (nothing is written then)."""
        token = uuid.uuid4().hex
        moved, _ = await self._script(
            [
                (
                    "UPDATE tasks SET progress = %s, progress_note = %s, claim_token = %s"
                    " WHERE id = %s AND status = 'PROCESSING' AND attempts = %s",
                    [progress, None if note is None else note[:255], token, task_id, attempt],
                ),
                events_statement(EventKind.PROGRESS, [task_id], token=token),
            ]
        )
        return moved.rowcount > 0

    async def _transition(
        self,
        kind: EventKind,
        task_id: str,
        source: TaskStatus,
        target: TaskStatus,
        changes: str,
        values: Sequence[object] = (),
    ) -> bool:
        """One conditional UPDATE of one task (`source` -> `target`, with `changes`, whose %s
        take `values`) and, if it moved, its count and its event."""
        token = uuid.uuid4().hex
        statements = [
            (
                f"UPDATE tasks SET status = %s, {changes}, claim_token = %s"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                " WHERE id = %s AND status = %s",
                [target.value, *values, token, task_id, source.value],
            ),
            counts.moved([task_id], token, source, target),
            events_statement(kind, [task_id], token=token),
        ]
        if target in FINAL_STATUSES:
            statements.append(deliveries_statement([task_id], token=token))
        moved, *_ = await self._script(statements)
        return moved.rowcount > 0

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        return await self._transition(
            EventKind.RETRY_SCHEDULED,
            task_id,
            TaskStatus.PROCESSING,
            TaskStatus.PENDING,
            "lease_expires_at = NULL, last_error = %s",
            [error[:500]],
        )

    async def fail(self, task_id: str, error: str) -> bool:
        return await self._transition(
            EventKind.FAILED,
            task_id,
            TaskStatus.PROCESSING,
            TaskStatus.FAILED,
            "lease_expires_at = NULL, last_error = %s",
            [error[:500]],
        )

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        changed = await self._transition(
            EventKind.REDRIVEN,
            task_id,
            TaskStatus.FAILED,
            TaskStatus.PENDING,
            "attempts = 0, last_error = NULL, dispatched_at = NULL, completed_at = NULL,"
            " result = NULL, progress = NULL, progress_note = NULL",
        )
        return await self.get(task_id) if changed else None

    async def cancel(self, task_id: str) -> Cancellation | None:
        """PENDING or PROCESSING -> CANCELLED, with its event; None for an unknown task. A
        final task is left as it is (`cancelled` False). The row is locked first, so the
        status it had is the one the cancel moved it from."""
        token = uuid.uuid4().hex
        locked, _, moved, *_ = await self._script(
            [
                ("SELECT status FROM tasks WHERE id = %s FOR UPDATE", [task_id]),
                # Read again into a variable for the counts: unchanged, as the row is locked.
                ("SET @was = (SELECT status FROM tasks WHERE id = %s)", [task_id]),
                # The outbox mark too: a cancelled task has no message left to send, and an
                # unmarked row would stay in the dispatcher's index range for good.
                (
                    "UPDATE tasks SET status = 'CANCELLED', lease_expires_at = NULL,"
                    " claim_token = %s,"
                    " dispatched_at = COALESCE(dispatched_at, UTC_TIMESTAMP(6))"
                    " WHERE id = %s AND status IN ('PENDING', 'PROCESSING')",
                    [token, task_id],
                ),
                counts.moved_from_variable([task_id], token, "@was", TaskStatus.CANCELLED),
                events_statement(EventKind.CANCELLED, [task_id], token=token),
                deliveries_statement([task_id], token=token),
            ]
        )
        if not locked.rows:
            return None
        record = await self.get(task_id)
        assert record is not None  # tasks are never deleted
        previous = TaskStatus(locked.rows[0][0])
        return Cancellation(record, previous, cancelled=moved.rowcount > 0)

    async def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], bool]:
        """A page of the list, newest first, and whether there is more after it.

        Only the query's tenant's rows: each status is read from its range of
        idx_tasks_tenant_status_created in (created_at, id) order (all statuses from
        idx_tasks_tenant_created), `limit + 1` rows at most, so the cost depends on the page size,
        never on how deep the page is; several statuses are merged here.

        With a type, one range of idx_tasks_tenant_type_created holds the page, whatever the
        statuses: without them it reads `limit + 1` rows; with them it reads the range's rows
        until `limit + 1` have one of them, so a status that is rare among the type's tasks
        (a few FAILED among a million COMPLETED) can scan much of the type's range.
        """
        statuses = sorted(query.statuses)
        ranges = [statuses] if query.type is not None or not statuses else [[s] for s in statuses]
        rows: list[TaskRecord] = []
        async with self._database.cursor() as cursor:
            for of_statuses in ranges:
                sql, args = _list_statement(query, of_statuses)
                await cursor.execute(sql, args)
                rows += [_record(row) for row in await cursor.fetchall()]
        rows.sort(key=lambda record: (record.created_at, record.task_id), reverse=True)
        return await self._with_callbacks(rows[: query.limit]), len(rows) > query.limit

    async def count_by_status(self, tenant: str = "") -> dict[TaskStatus, int]:
        """How many of `tenant`'s tasks have each status (0 included), from task_counts."""
        async with self._database.cursor() as cursor:
            await cursor.execute(counts.TOTALS, (tenant,))
            found = {TaskStatus(status): int(count) for status, count in await cursor.fetchall()}
        return {status: found.get(status, 0) for status in TaskStatus}

    async def throughput(self, tenant: str = "", *, minutes: int = 60) -> list[MinuteThroughput]:
        """`tenant`'s tasks submitted and completed in each of the last `minutes` UTC
        minutes, oldest first, the current one last (0 included), from task_throughput."""
        async with self._database.cursor() as cursor:
            await cursor.execute(*throughput.window_statement(tenant, minutes))
            rows = await cursor.fetchall()
        return throughput.minutes_of(rows, minutes)

    async def purge_throughput(self, *, limit: int) -> int:
        """Delete up to `limit` throughput rows older than a day, tenant by tenant, oldest
        first; how many went."""
        async with self._database.cursor() as cursor:
            await cursor.execute(throughput.STALE_TENANTS)
            tenants = [tenant for (tenant,) in await cursor.fetchall()]
        deleted = 0
        for tenant in tenants:
            if deleted >= limit:
                break
            deleted += await self._execute(throughput.PURGE, (tenant, limit - deleted))
        return deleted

    async def events_after(self, task_id: str, after_id: int, *, limit: int) -> list[TaskEvent]:
        """The task's events with an id above `after_id`, oldest first."""
        async with self._database.cursor() as cursor:
            await cursor.execute(
                f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = %s AND id > %s"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                " ORDER BY id LIMIT %s",
                (task_id, after_id, limit),
            )
            return [event_of(row) for row in await cursor.fetchall()]

    async def latest_event(self, task_id: str) -> TaskEvent | None:
        async with self._database.cursor() as cursor:
            await cursor.execute(
                f"SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = %s"  # nosec B608  # constant SQL fragments and %s placeholders; values are parameters
                " ORDER BY id DESC LIMIT 1",
                (task_id,),
            )
            rows = await cursor.fetchall()
        return event_of(rows[0]) if rows else None

    async def tenant_events_after(
        self, tenant: str, after_id: int, *, limit: int
    ) -> list[EventRow]:
        """One range of task_events' primary key after `after_id`, each row joined to its task
        by primary key: it reads every tenant's events in that range, so its cost grows with
        all tenants' traffic, not with this tenant's alone (task_events has no tenant)."""
        async with self._database.cursor() as cursor:
            await cursor.execute(*tenant_events_statement(tenant, after_id, limit))
            return [event_row_of(row) for row in await cursor.fetchall()]

    async def newest_event_id(self) -> int:
        async with self._database.cursor() as cursor:
            await cursor.execute("SELECT COALESCE(MAX(id), 0) FROM task_events")
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def ping(self) -> None:
        async with self._database.cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchone()
