"""MySQL access with asyncmy: the connection pool and the tasks repository.

No ORM: each operation is one or two statements. Driver errors that mean "the database is
not answering" become DatabaseUnavailable; anything else is a bug and propagates as it is.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncmy
import orjson
from asyncmy.errors import DataError, IntegrityError, InterfaceError, OperationalError

from common.errors import DatabaseRefused, DatabaseUnavailable
from common.settings import DatabaseAddress, Settings
from common.tasks import (
    FINAL_STATUSES,
    Claim,
    ClaimRequest,
    ClaimResult,
    NewTask,
    PublishOne,
    TaskRecord,
    TaskStatus,
)

logger = logging.getLogger(__name__)

_UNAVAILABLE = (OperationalError, InterfaceError, OSError, TimeoutError)
_REFUSED = (DataError, IntegrityError)  # the server answered "no" to the data itself
# Server errors that mean "not now" (too many connections, shutting down, lock wait timeout,
# deadlock, connection killed, idle disconnect); client errors (2000-2999) are all of that kind.
_TRANSIENT_SERVER_ERRORS = frozenset({1040, 1053, 1205, 1213, 1927, 4031})


def _unavailable(exc: BaseException) -> DatabaseUnavailable:
    """Every operational failure is "unavailable": retried later, never blamed on a task. One
    that is not about the connection (an unknown column, access denied, a constraint) is a
    refusal, a failure of the deployment: logged as an error so that someone fixes it."""
    answered = isinstance(exc, OperationalError | DataError | IntegrityError) and exc.args
    code = exc.args[0] if answered else None
    if isinstance(code, int) and not 2000 <= code < 3000 and code not in _TRANSIENT_SERVER_ERRORS:
        logger.error("database refused the statement", extra={"code": code, "error": str(exc)})
        return DatabaseRefused(f"MySQL: {exc!r}")
    return DatabaseUnavailable(f"MySQL: {exc!r}")


_DEADLOCK = 1213
_DEADLOCK_ATTEMPTS = 3


def _is_deadlock(exc: DatabaseUnavailable) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OperationalError) and bool(cause.args) and cause.args[0] == _DEADLOCK


_COLUMNS = (
    "id, title, description, status, metadata, attempts, last_error,"
    " created_at, updated_at, completed_at"
)


async def create_pool(settings: Settings) -> Any:
    """Open the pool; raises DatabaseUnavailable when the server cannot be reached."""
    address: DatabaseAddress = settings.database
    try:
        return await asyncio.wait_for(
            asyncmy.create_pool(
                host=address.host,
                port=address.port,
                user=address.user,
                password=address.password,
                db=address.database,
                minsize=0,
                maxsize=settings.database_pool_size,
                autocommit=True,
                charset="utf8mb4",
                pool_recycle=300,
                init_command="SET time_zone = '+00:00'",
            ),
            timeout=settings.database_timeout_seconds,
        )
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


async def close_pool(pool: Any) -> None:
    pool.close()
    await pool.wait_closed()


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
    """The TaskRepository port on a shared asyncmy pool."""

    def __init__(self, pool: Any, *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[Any]:
        try:
            async with asyncio.timeout(self._timeout):
                async with self._pool.acquire() as connection, connection.cursor() as cursor:
                    yield cursor
        except (*_UNAVAILABLE, *_REFUSED) as exc:
            raise _unavailable(exc) from exc

    async def _execute(self, sql: str, args: Sequence[object]) -> int:
        """One autocommit statement; the rows it changed. A statement chosen as a deadlock
        victim was rolled back whole, so it is run again (up to three times in all)."""
        for attempt in range(_DEADLOCK_ATTEMPTS):
            try:
                async with self._cursor() as cursor:
                    await cursor.execute(sql, args)
                    return int(cursor.rowcount)
            except DatabaseUnavailable as exc:
                if not _is_deadlock(exc) or attempt == _DEADLOCK_ATTEMPTS - 1:
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
        async with self._cursor() as cursor:
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
        async with self._cursor() as cursor:
            connection = cursor.connection
            # READ COMMITTED for this transaction: under REPEATABLE READ its range scan
            # would also lock the gap where new tasks are inserted, holding up every insert
            # (and deadlocking some) while the messages are being published.
            await cursor.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            await connection.begin()
            try:
                # SKIP LOCKED: several API replicas dispatch side by side without sending
                # the same rows twice or waiting on each other.
                await cursor.execute(
                    f"SELECT {_COLUMNS} FROM tasks WHERE dispatched_at IS NULL"
                    " AND status = 'PENDING'"
                    " AND updated_at < UTC_TIMESTAMP(6) - INTERVAL %s MICROSECOND"
                    " ORDER BY updated_at LIMIT %s FOR UPDATE SKIP LOCKED",
                    (int(min_age_seconds * 1_000_000), limit),
                )
                records = [_record(row) for row in await cursor.fetchall()]
                # All at once: the publisher writes them together and each waits for its own
                # confirm, so a pass after an outage takes one round trip, not one per task.
                published = await asyncio.gather(*(publish(record) for record in records))
                confirmed = [r.task_id for r, ok in zip(records, published, strict=True) if ok]
                if confirmed:
                    await cursor.execute(
                        "UPDATE tasks SET dispatched_at = UTC_TIMESTAMP(6)"
                        f" WHERE id IN ({_in_clause(len(confirmed))})",
                        confirmed,
                    )
                await connection.commit()
            except BaseException:
                await connection.rollback()
                raise
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
        async with self._cursor() as cursor:
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
        async with self._cursor() as cursor:
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
        async with self._cursor() as cursor:
            await cursor.execute("SELECT 1")
            await cursor.fetchone()
