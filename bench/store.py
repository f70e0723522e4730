"""The bench's own view of the tasks table: bulk loads, counts and timestamps."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncmy
import orjson
from asyncmy.converters import escape_str

from common.mysql.counts import RECOUNT
from common.settings import Settings

# Rows per INSERT statement and per transaction when loading in bulk.
_ROWS_PER_STATEMENT = 5_000
_STATEMENTS_PER_TRANSACTION = 10
_LOADERS = 2
# The tables a measurement leaves rows in; each one starts with them empty.
_TABLES = ("tasks", "task_events", "idempotency_keys")

# The history the list and stats measurements read: a month of tasks, the newest few still
# PENDING or PROCESSING, the rest mostly COMPLETED. They are created in id order, so that the
# load appends to every index (in a random order it took 128 s for 1M rows instead of ~20).
HISTORY = timedelta(days=30)
MOVING_SHARE = 0.002
FINISHED_MIX = {"COMPLETED": 94, "FAILED": 4, "CANCELLED": 2}
_SEED = 11


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
        for table in _TABLES:
            await self._fetch(f"TRUNCATE TABLE {table}")
        await self.recount()

    async def recount(self) -> None:
        """task_counts from the rows: the bulk loads write rows around the transitions."""
        for statement in RECOUNT:
            await self._fetch(statement)

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

    async def newest_ids(self, status: str | None, *, limit: int) -> list[str]:
        """The newest `limit` tasks' ids (of `status`), in the list's order: newest first."""
        where, args = ("WHERE status = %s", [status]) if status else ("", [])
        rows = await self._fetch(
            f"SELECT id FROM tasks {where} ORDER BY created_at DESC, id DESC LIMIT %s",
            [*args, limit],
        )
        return [str(task_id) for (task_id,) in rows]

    async def events(self) -> dict[str, list[tuple[int, str]]]:
        """Every task's events (id, kind), oldest first, by task id."""
        found: dict[str, list[tuple[int, str]]] = {}
        for task_id, event_id, kind in await self._fetch(
            "SELECT task_id, id, kind FROM task_events ORDER BY id"
        ):
            found.setdefault(str(task_id), []).append((int(event_id), str(kind)))
        return found

    async def _has_column(self, name: str) -> bool:
        return bool(await self._fetch("SHOW COLUMNS FROM tasks LIKE %s", (name,)))

    async def insert(
        self,
        ids: Sequence[str],
        *,
        status: str,
        task_type: str | None = None,
        payloads: Sequence[dict[str, object]] = (),
    ) -> None:
        """Insert one row per id in a few large transactions, on a few connections at once.

        The rows look like the services' own: a COMPLETED one has its completed_at, and when
        the table has the outbox mark, every row is marked as dispatched (the suite publishes
        the PENDING ones' messages itself), so no API's dispatcher sends them again. Without
        `task_type` the rows get the column's default type (`simulated`) and no payload; with
        it, that type and each id's payload from `payloads`, in the same order."""
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        columns = "id, title, description, status, created_at, updated_at, completed_at"
        completed = f"'{now}'" if status == "COMPLETED" else "NULL"
        extra = ""
        if await self._has_column("dispatched_at"):
            columns += ", dispatched_at"
            extra = f",'{now}'"
        typed = [""] * len(ids)
        if task_type is not None:
            columns += ", type, payload"
            typed = [
                f",{escape_str(task_type)},{escape_str(orjson.dumps(payload).decode())}"
                for payload in payloads
            ]
        # The ids are UUIDs and the rest are constants or escaped.
        values = [
            f"('{task_id}','bench task','a row loaded by the benchmark','{status}',"
            f"'{now}','{now}',{completed}{extra}{more})"
            for task_id, more in zip(ids, typed, strict=True)
        ]
        await self._insert_values(columns, values)

    async def results(self) -> dict[str, tuple[str, Any]]:
        """Every task's status and result (parsed JSON; None when NULL), by id."""
        rows = await self._fetch("SELECT id, status, result FROM tasks")
        return {
            str(task_id): (str(status), None if result is None else orjson.loads(result))
            for task_id, status, result in rows
        }

    async def insert_history(self, ids: Sequence[str], *, now: datetime) -> None:
        """One row per id (in sorted order), created one after the other over the `HISTORY`
        before `now`, with each status's columns as the services leave them.

        The newest MOVING_SHARE are PENDING or PROCESSING (every other one), the rest
        FINISHED_MIX at random (seeded: every run loads the same mix). Every row is marked as
        dispatched, so no API's dispatcher publishes the PENDING ones."""
        rng = random.Random(_SEED)
        step = HISTORY / max(len(ids), 1)
        oldest = now - HISTORY
        moving_from = len(ids) - round(len(ids) * MOVING_SHARE)
        finished = rng.choices(list(FINISHED_MIX), weights=list(FINISHED_MIX.values()), k=len(ids))
        lease = _sql_time(now + timedelta(hours=1))
        values = []
        for rank, (task_id, final) in enumerate(zip(ids, finished, strict=True)):
            status = final if rank < moving_from else ("PENDING", "PROCESSING")[rank % 2]
            values.append(_history_row(task_id, status, oldest + rank * step, lease))
        columns = (
            "id, title, description, status, attempts, last_error, created_at, updated_at,"
            " started_at, completed_at, dispatched_at, lease_expires_at"
        )
        await self._insert_values(columns, values)

    async def _insert_values(self, columns: str, values: Sequence[str]) -> None:
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
        await self.recount()

    async def _run_in_transactions(self, statements: Sequence[str]) -> None:
        async with self._pool.acquire() as connection, connection.cursor() as cursor:
            for start in range(0, len(statements), _STATEMENTS_PER_TRANSACTION):
                await connection.begin()
                for statement in statements[start : start + _STATEMENTS_PER_TRANSACTION]:
                    await cursor.execute(statement)
                await connection.commit()


# How each status's row looks: attempts, last_error, then the seconds after its creation of
# its last update, its first claim and its completion (None: NULL).
_SHAPES: dict[str, tuple[int, str, int, int | None, int | None]] = {
    "COMPLETED": (1, "NULL", 8, 1, 8),
    "FAILED": (5, "'simulated failure'", 60, 1, None),
    "CANCELLED": (0, "NULL", 2, None, None),
    "PENDING": (0, "NULL", 0, None, None),
    "PROCESSING": (1, "NULL", 1, 1, None),
}


def _sql_time(value: datetime) -> str:
    return "'" + value.replace(tzinfo=None).isoformat(" ", "microseconds") + "'"


def _after(at: str, seconds: int | None) -> str:
    """`seconds` after the time `at`, computed by the server (cheaper than formatting it)."""
    return "NULL" if seconds is None else f"{at}+INTERVAL {seconds} SECOND"


def _history_row(task_id: str, status: str, created: datetime, lease: str) -> str:
    """The VALUES of one task of the history, as its last transition left it; a PROCESSING
    one holds a lease that outlasts the run."""
    attempts, error, updated, started, completed = _SHAPES[status]
    at = _sql_time(created)
    times = ",".join((at, _after(at, updated), _after(at, started), _after(at, completed)))
    held = lease if status == "PROCESSING" else "NULL"
    return (
        f"('{task_id}','bench task','a row loaded by the benchmark','{status}',"
        f"{attempts},{error},{times},{at},{held})"
    )


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
