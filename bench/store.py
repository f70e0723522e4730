"""The bench's own view of the tasks table: bulk loads, counts and timestamps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncmy

from common.settings import Settings

# Rows per INSERT statement and per transaction when loading in bulk.
_ROWS_PER_STATEMENT = 5_000
_STATEMENTS_PER_TRANSACTION = 10
_LOADERS = 2


def new_ids(count: int) -> list[str]:
    """Random task ids in sorted order, so that a bulk load appends to the primary key."""
    return sorted(str(uuid.uuid4()) for _ in range(count))


def epoch(value: datetime) -> float:
    """A naive UTC DATETIME from the table as seconds since the epoch."""
    return value.replace(tzinfo=UTC).timestamp()


class TaskTable:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    async def _fetch(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        async with self._pool.acquire() as connection, connection.cursor() as cursor:
            await cursor.execute(sql, args)
            return list(await cursor.fetchall())

    async def server_version(self) -> str:
        return str((await self._fetch("SELECT VERSION()"))[0][0])

    async def truncate(self) -> None:
        await self._fetch("TRUNCATE TABLE tasks")

    async def status_counts(self) -> dict[str, int]:
        rows = await self._fetch("SELECT status, COUNT(*) FROM tasks GROUP BY status")
        return {str(status): int(count) for status, count in rows}

    async def count(self) -> int:
        return sum((await self.status_counts()).values())

    async def attempts(self) -> int:
        rows = await self._fetch("SELECT COALESCE(SUM(attempts), 0) FROM tasks")
        return int(rows[0][0])

    async def completion_times(self) -> dict[str, tuple[float, float]]:
        """created_at and completed_at (epoch seconds) of every COMPLETED task, by id."""
        rows = await self._fetch(
            "SELECT id, created_at, completed_at FROM tasks WHERE status = 'COMPLETED'"
        )
        return {task_id: (epoch(created), epoch(done)) for task_id, created, done in rows}

    async def _has_column(self, name: str) -> bool:
        return bool(await self._fetch("SHOW COLUMNS FROM tasks LIKE %s", (name,)))

    async def insert(self, ids: Sequence[str], *, status: str) -> None:
        """Insert one row per id in a few large transactions, on a few connections at once.

        The rows look like the services' own: a COMPLETED one has its completed_at, and when
        the table has the outbox mark, every row is marked as dispatched (the suite publishes
        the PENDING ones' messages itself), so no API's dispatcher sends them again."""
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        columns = "id, title, description, status, created_at, updated_at, completed_at"
        completed = f"'{now}'" if status == "COMPLETED" else "NULL"
        extra = ""
        if await self._has_column("dispatched_at"):
            columns += ", dispatched_at"
            extra = f",'{now}'"
        # The ids are UUIDs and the rest are constants: no value here needs escaping.
        values = [
            f"('{task_id}','bench task','a row loaded by the benchmark','{status}',"
            f"'{now}','{now}',{completed}{extra})"
            for task_id in ids
        ]
        statements = [
            f"INSERT INTO tasks ({columns}) VALUES "
            + ",".join(values[start : start + _ROWS_PER_STATEMENT])
            for start in range(0, len(values), _ROWS_PER_STATEMENT)
        ]
        if not statements:
            return
        share = -(-len(statements) // _LOADERS)
        await asyncio.gather(
            *(
                self._run_in_transactions(statements[start : start + share])
                for start in range(0, len(statements), share)
            )
        )

    async def _run_in_transactions(self, statements: Sequence[str]) -> None:
        async with self._pool.acquire() as connection, connection.cursor() as cursor:
            for start in range(0, len(statements), _STATEMENTS_PER_TRANSACTION):
                await connection.begin()
                for statement in statements[start : start + _STATEMENTS_PER_TRANSACTION]:
                    await cursor.execute(statement)
                await connection.commit()


async def open_table(settings: Settings) -> TaskTable:
    address = settings.database
    pool = await asyncmy.create_pool(
        host=address.host,
        port=address.port,
        user=address.user,
        password=address.password,
        db=address.database,
        minsize=1,
        maxsize=_LOADERS + 2,
        autocommit=True,
        charset="utf8mb4",
        init_command="SET time_zone = '+00:00'",
    )
    return TaskTable(pool)
