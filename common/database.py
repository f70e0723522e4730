"""MySQL access with asyncmy: the connection pool and the tasks repository.

No ORM: each operation is one or two statements. Driver errors that mean "the database is
not answering" become DatabaseUnavailable; anything else is a bug and propagates as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncmy
import orjson
from asyncmy.errors import InterfaceError, OperationalError

from common.errors import DatabaseUnavailable
from common.settings import DatabaseAddress, Settings
from common.tasks import (
    FINAL_STATUSES,
    Claim,
    ClaimResult,
    NewTask,
    PublishOne,
    TaskRecord,
    TaskStatus,
)

logger = logging.getLogger(__name__)

_UNAVAILABLE = (OperationalError, InterfaceError, OSError, TimeoutError)

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
        raise DatabaseUnavailable(f"cannot connect to MySQL: {exc}") from exc


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
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(f"MySQL did not answer: {exc!r}") from exc

    async def _execute(self, sql: str, args: Sequence[object]) -> int:
        async with self._cursor() as cursor:
            await cursor.execute(sql, args)
            return int(cursor.rowcount)

    async def create(self, task: NewTask) -> TaskRecord:
        metadata = None if task.metadata is None else orjson.dumps(task.metadata).decode()
        # The timestamp is taken here so that the insert is the only round trip.
        now = datetime.now(UTC)
        naive = now.replace(tzinfo=None)
        await self._execute(
            "INSERT INTO tasks (id, title, description, status, metadata, created_at, updated_at)"
            " VALUES (%s, %s, %s, 'PENDING', %s, %s, %s)",
            (task.task_id, task.title, task.description, metadata, naive, naive),
        )
        return TaskRecord(
            task_id=task.task_id,
            title=task.title,
            description=task.description,
            status=TaskStatus.PENDING,
            metadata=task.metadata,
            attempts=0,
            last_error=None,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )

    async def get(self, task_id: str) -> TaskRecord | None:
        async with self._cursor() as cursor:
            await cursor.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = %s", (task_id,))
            row = await cursor.fetchone()
        return None if row is None else _record(row)

    async def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            await self._execute(
                "UPDATE tasks SET dispatched_at = UTC_TIMESTAMP(6)"
                f" WHERE id IN ({_in_clause(len(task_ids))}) AND dispatched_at IS NULL",
                list(task_ids),
            )

    async def dispatch_undispatched(
        self, *, publish: PublishOne, limit: int, min_age_seconds: float
    ) -> int:
        async with self._cursor() as cursor:
            connection = cursor.connection
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
                confirmed = [r.task_id for r in records if await publish(r)]
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
        async with self._cursor() as cursor:
            # One round trip: LAST_INSERT_ID(expr) hands the new attempt count back in the OK
            # packet. The claim also sets the outbox mark: a worker holding the message proves
            # it was dispatched, so the dispatcher will not send it again.
            await cursor.execute(
                "UPDATE tasks SET status = 'PROCESSING', attempts = LAST_INSERT_ID(attempts + 1),"
                " lease_expires_at = UTC_TIMESTAMP(6) + INTERVAL %s MICROSECOND,"
                " dispatched_at = COALESCE(dispatched_at, UTC_TIMESTAMP(6))"
                " WHERE id = %s AND (status = 'PENDING' OR (status = 'PROCESSING'"
                " AND (%s OR lease_expires_at IS NULL OR lease_expires_at < UTC_TIMESTAMP(6))))",
                (int(lease_seconds * 1_000_000), task_id, steal),
            )
            if cursor.rowcount:
                return Claim(ClaimResult.CLAIMED, attempts=int(cursor.lastrowid))
            await cursor.execute("SELECT status FROM tasks WHERE id = %s", (task_id,))
            row = await cursor.fetchone()
        if row is None:
            return Claim(ClaimResult.NOT_FOUND)
        if TaskStatus(row[0]) in FINAL_STATUSES:
            return Claim(ClaimResult.ALREADY_FINAL)
        return Claim(ClaimResult.HELD_ELSEWHERE)

    async def complete(self, task_id: str) -> bool:
        return bool(
            await self._execute(
                "UPDATE tasks SET status = 'COMPLETED', completed_at = UTC_TIMESTAMP(6),"
                " lease_expires_at = NULL WHERE id = %s AND status = 'PROCESSING'",
                (task_id,),
            )
        )

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
