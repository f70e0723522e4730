"""The tasks table: every statement the TaskRepository port needs, in MySQL.

No ORM: each operation is one or two statements. Statements that many callers make at once
(create, read, claim, complete) come in batch forms (`*_many`) that `GroupedTaskRepository`
shares between concurrent callers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from common.errors import DatabaseUnavailable
from common.mysql.connection import Database
from common.mysql.errors import is_deadlock
from common.ports import PublishOne
from common.tasks import FINAL_STATUSES, Claim, ClaimResult, NewTask, TaskRecord, TaskStatus

logger = logging.getLogger(__name__)

_DEADLOCK_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    task_id: str
    steal: bool = False


_COLUMNS = (
    "id, title, description, status, metadata, attempts, last_error,"
    " created_at, updated_at, completed_at"
)


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _record(row: tuple[Any, ...]) -> TaskRecord:
    task_id, title, description, status, metadata, attempts, last_error, *times = row
    created_at, updated_at, completed_at = (_utc(value) for value in times)
    assert created_at is not None
    assert updated_at is not None
    return TaskRecord(
        task_id=task_id,
        title=title,
        description=description,
        status=TaskStatus(status),
        metadata=None if metadata is None else orjson.loads(metadata),
        attempts=attempts,
        last_error=last_error,
        created_at=created_at,
        updated_at=updated_at,
        completed_at=completed_at,
    )


def _in_clause(count: int) -> str:
    return ", ".join(["%s"] * count)


def _claim_of(row: tuple[Any, ...] | None, token: str, already_granted: bool) -> Claim:
    if row is None:
        return Claim(ClaimResult.NOT_FOUND)
    status, attempts, claim_token = row
    if status == "PROCESSING" and claim_token == token and not already_granted:
        return Claim(ClaimResult.CLAIMED, attempts=attempts)
    if TaskStatus(status) in FINAL_STATUSES:
        return Claim(ClaimResult.ALREADY_FINAL)
    return Claim(ClaimResult.HELD_ELSEWHERE)


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

    async def _execute(self, sql: str, args: Sequence[object]) -> int:
        """One autocommit statement; the rows it changed. A statement chosen as a deadlock
        victim was rolled back whole, so it is run again (up to three times in all)."""
        for attempt in range(_DEADLOCK_ATTEMPTS):
            try:
                async with self._database.cursor() as cursor:
                    await cursor.execute(sql, args)
                    return int(cursor.rowcount)
            except DatabaseUnavailable as exc:
                if not is_deadlock(exc) or attempt == _DEADLOCK_ATTEMPTS - 1:
                    raise
                logger.info("statement retried after a deadlock", extra={"attempt": attempt + 1})
        raise AssertionError("unreachable")

    async def create(self, task: NewTask) -> TaskRecord:
        [record] = await self.create_many([task])
        return record

    async def create_many(self, tasks: Sequence[NewTask]) -> list[TaskRecord]:
        """Insert the tasks as PENDING and undispatched, in one statement: all or none."""
        # The timestamp is taken here so that the insert is the only round trip.
        now = datetime.now(UTC)
        naive = now.replace(tzinfo=None)
        values: list[object] = []
        for task in tasks:
            metadata = None if task.metadata is None else orjson.dumps(task.metadata).decode()
            values += [task.task_id, task.title, task.description, metadata, naive, naive]
        rows = ", ".join(["(%s, %s, %s, 'PENDING', %s, %s, %s)"] * len(tasks))
        await self._execute(
            "INSERT INTO tasks (id, title, description, status, metadata, created_at, updated_at)"
            f" VALUES {rows}",
            values,
        )
        return [TaskRecord.pending(task, now) for task in tasks]

    async def get(self, task_id: str) -> TaskRecord | None:
        [record] = await self.get_many([task_id])
        return record

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        """The tasks in one SELECT, in the order asked (None where there is no such task)."""
        ids = sorted(set(task_ids))
        async with self._database.cursor() as cursor:
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE id IN ({_in_clause(len(ids))})", ids
            )
            found = {row[0]: _record(row) for row in await cursor.fetchall()}
        return [found.get(task_id) for task_id in task_ids]

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            # By primary key only: "AND dispatched_at IS NULL" would let the optimizer scan
            # idx_tasks_undispatched and lock the very gap new tasks are inserted into.
            await self._execute(
                "UPDATE tasks SET dispatched_at = COALESCE(dispatched_at, UTC_TIMESTAMP(6))"
                f" WHERE id IN ({_in_clause(len(task_ids))})",
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
            # same rows twice or waiting on each other.
            await transaction.execute(
                f"SELECT {_COLUMNS} FROM tasks WHERE dispatched_at IS NULL"
                " AND status = 'PENDING'"
                " AND updated_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"
                " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
                (int(min_age_seconds * 1_000_000), limit),
            )
            records = [_record(row) for row in await transaction.fetchall()]
            # All at once: the publisher writes them together and each waits for its own
            # confirm, so a pass after an outage takes one round trip, not one per task.
            published = await asyncio.gather(*(publish(record) for record in records))
            confirmed = [r.task_id for r, ok in zip(records, published, strict=True) if ok]
            if confirmed:
                await transaction.execute(
                    "UPDATE tasks SET dispatched_at = UTC_TIMESTAMP(6)"
                    f" WHERE id IN ({_in_clause(len(confirmed))})",
                    confirmed,
                )
        return len(confirmed)

    async def claim(self, task_id: str, *, lease_seconds: float, steal: bool) -> Claim:
        [claim] = await self.claim_many([ClaimRequest(task_id, steal)], lease_seconds=lease_seconds)
        return claim

    async def claim_many(
        self, requests: Sequence[ClaimRequest], *, lease_seconds: float
    ) -> list[Claim]:
        """Claim a batch in one UPDATE, then read back which rows carry this batch's token.

        The claim also sets the outbox mark: a worker holding the message proves it was
        dispatched, so the dispatcher will not send it again. A task asked for twice in one
        batch is claimed for the first request only.
        """
        ids = sorted({request.task_id for request in requests})
        stealing = sorted({r.task_id for r in requests if r.steal}) or [""]
        token = uuid.uuid4().hex
        async with self._database.cursor() as cursor:
            # LAST_INSERT_ID(expr) hands the new attempt count back in the OK packet: for a
            # batch of one task (the usual case below saturation) no read-back is needed.
            await cursor.execute(
                "UPDATE tasks SET status = 'PROCESSING', attempts = LAST_INSERT_ID(attempts + 1),"
                " lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND,"
                " dispatched_at = COALESCE(dispatched_at, UTC_TIMESTAMP(6)), claim_token = %s"
                f" WHERE id IN ({_in_clause(len(ids))}) AND (status = 'PENDING'"
                " OR (status = 'PROCESSING' AND (lease_expires_at IS NULL"
                " OR lease_expires_at < UTC_TIMESTAMP(6)"
                f" OR id IN ({_in_clause(len(stealing))}))))",
                [int(lease_seconds * 1_000_000), token, *ids, *stealing],
            )
            if len(ids) == 1 and cursor.rowcount == 1:
                return _claims_of_one(requests, attempts=int(cursor.lastrowid))
            await cursor.execute(
                f"SELECT id, status, attempts, claim_token FROM tasks WHERE id IN ({_in_clause(len(ids))})",
                ids,
            )
            rows = {row[0]: row[1:] for row in await cursor.fetchall()}
        claims: list[Claim] = []
        granted: set[str] = set()
        for request in requests:
            claims.append(_claim_of(rows.get(request.task_id), token, request.task_id in granted))
            if claims[-1].result is ClaimResult.CLAIMED:
                granted.add(request.task_id)
        return claims

    async def complete(self, task_id: str) -> bool:
        [completed] = await self.complete_many([task_id])
        return completed

    async def complete_many(self, task_ids: Sequence[str]) -> list[bool]:
        """PROCESSING -> COMPLETED for a batch; True for each task this call completed (the
        first time it is named, if named twice)."""
        ids = sorted(set(task_ids))
        token = uuid.uuid4().hex
        async with self._database.cursor() as cursor:
            await cursor.execute(
                "UPDATE tasks SET status = 'COMPLETED', completed_at = UTC_TIMESTAMP(6),"
                " lease_expires_at = NULL, claim_token = %s"
                f" WHERE id IN ({_in_clause(len(ids))}) AND status = 'PROCESSING'",
                [token, *ids],
            )
            if not cursor.rowcount:
                return [False] * len(task_ids)
            if len(ids) == 1:  # one task, and this statement completed it
                return [index == 0 for index in range(len(task_ids))]
            await cursor.execute(
                f"SELECT id FROM tasks WHERE id IN ({_in_clause(len(ids))})"
                " AND claim_token = %s AND status = 'COMPLETED'",
                [*ids, token],
            )
            completed = {row[0] for row in await cursor.fetchall()}
        results = []
        for task_id in task_ids:
            results.append(task_id in completed)
            completed.discard(task_id)
        return results

    async def release_for_retry(self, task_id: str, error: str) -> bool:
        return bool(
            await self._execute(
                "UPDATE tasks SET status = 'PENDING', last_error = %s, lease_expires_at = NULL"
                " WHERE id = %s AND status = 'PROCESSING'",
                (error[:500], task_id),
            )
        )

    async def fail(self, task_id: str, error: str) -> bool:
        return bool(
            await self._execute(
                "UPDATE tasks SET status = 'FAILED', last_error = %s, lease_expires_at = NULL"
                " WHERE id = %s AND status = 'PROCESSING'",
                (error[:500], task_id),
            )
        )

    async def reset_failed(self, task_id: str) -> TaskRecord | None:
        changed = await self._execute(
            "UPDATE tasks SET status = 'PENDING', attempts = 0, last_error = NULL,"
            " dispatched_at = NULL, completed_at = NULL WHERE id = %s AND status = 'FAILED'",
            (task_id,),
        )
        return await self.get(task_id) if changed else None

    async def ping(self) -> None:
        async with self._database.cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchone()
