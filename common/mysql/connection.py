"""The pool of MySQL connections a process shares, and the boundary around every use of it.

Whatever goes wrong inside `cursor()` or `transaction()` leaves as DatabaseUnavailable (or
DatabaseRefused), within DATABASE_TIMEOUT_SECONDS: a server that never answers a byte, or
answers too slowly, is a timeout like any other. A connection that failed or was abandoned
mid-statement is closed, never handed to the next caller. With tracing on, each statement
and each script within a trace is a span (common.mysql.spans).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncmy
from asyncmy.constants import CLIENT

from common import tracing
from common.errors import DatabaseUnavailable
from common.mysql import spans
from common.mysql.errors import translated
from common.settings import DatabaseAddress, Settings

_READ_COMMITTED = ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "BEGIN")


class Database:
    """Made before the event loop runs; `start()` opens the pool, which connects only when a
    caller needs a connection, so the server may be down at start."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._address = settings.database
        self.timeout = settings.database_timeout_seconds
        self._pool: Any = None

    async def start(self) -> None:
        address = self._settings.database
        with translated(timeout=self.timeout):
            async with asyncio.timeout(self.timeout):
                self._pool = await asyncmy.create_pool(
                    host=address.host,
                    port=address.port,
                    user=address.user,
                    password=address.password,
                    db=address.database,
                    minsize=0,
                    maxsize=self._settings.database_pool_size,
                    autocommit=True,
                    charset="utf8mb4",
                    pool_recycle=300,
                    connect_timeout=self.timeout,
                    init_command="SET time_zone = '+00:00'",
                    # For `script`: a transaction in one round trip. Every value still goes
                    # through the driver's escaping; no statement is built from input.
                    client_flag=CLIENT.MULTI_STATEMENTS,
                )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.close()
        # Closing says goodbye on each idle connection; a server that does not answer must
        # not hold up the process's exit.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await pool.wait_closed()

    def cursor(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A cursor for one operation: taking a connection and running its statements all
        happen within DATABASE_TIMEOUT_SECONDS."""
        return self._cursor(traced=True)

    @contextlib.asynccontextmanager
    async def _cursor(self, *, traced: bool) -> AsyncIterator[Any]:
        with translated(timeout=self.timeout):
            async with (
                asyncio.timeout(self.timeout),
                self._connection() as connection,
                connection.cursor() as cursor,
            ):
                if traced and tracing.recording():
                    yield spans.TracedCursor(cursor, self._address)
                else:
                    yield cursor

    @contextlib.asynccontextmanager
    async def transaction(self, *, isolation: str | None = None) -> AsyncIterator[Transaction]:
        """One transaction, committed when the block ends without an error (an error closes
        the connection, and the server rolls back). Taking the connection and each statement
        get DATABASE_TIMEOUT_SECONDS of their own, so the block may wait on something else in
        between: the dispatcher publishes inside one."""
        with translated(timeout=self.timeout):
            async with (
                self._connection(acquire_within=self.timeout) as connection,
                connection.cursor() as cursor,
            ):
                transaction = Transaction(cursor, timeout=self.timeout, address=self._address)
                if isolation:
                    await transaction.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                await transaction.execute("BEGIN")
                yield transaction
                await transaction.execute("COMMIT")

    async def script(self, statements: Sequence[Statement]) -> list[Result]:
        """The statements as one transaction sent in one round trip (BEGIN; ...; COMMIT),
        within DATABASE_TIMEOUT_SECONDS; each one's result, in order. A statement that
        fails stops the rest, and the connection is closed, so the server rolls it all back.

        For the transitions on every task's path, where BEGIN, each statement and COMMIT
        as round trips of their own cost more than the statements did. READ COMMITTED, so
        that an INSERT ... SELECT reads its rows without locking them: under REPEATABLE
        READ it would wait on rows other transactions hold, while holding the table's
        AUTO-INC lock (MariaDB's default lock mode) that every other event insert needs.
        """
        sql = "; ".join([*_READ_COMMITTED, *(statement for statement, _ in statements), "COMMIT"])
        args = [value for _, values in statements for value in values]
        async with self._cursor(traced=False) as cursor:
            with spans.script(statements, sql, self._address):
                return await _script_results(cursor, sql, args, len(statements))

    @contextlib.asynccontextmanager
    async def _connection(self, *, acquire_within: float | None = None) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailable("MySQL: not connected (Database.start was not called)")
        async with asyncio.timeout(acquire_within):
            connection = await pool.acquire()
        try:
            yield connection
        except BaseException:
            # Failed or abandoned mid-statement, it may still owe a reply: closed, the pool
            # drops it instead of handing it to the next caller.
            with contextlib.suppress(Exception):
                connection.close()
            raise
        finally:
            pool.release(connection)


Statement = tuple[str, Sequence[object]]


async def _script_results(cursor: Any, sql: str, args: list[object], count: int) -> list[Result]:
    await cursor.execute(sql, args or None)  # the isolation level's result
    await cursor.nextset()  # BEGIN's
    results = []
    for _ in range(count):
        await cursor.nextset()
        rows = list(await cursor.fetchall()) if cursor.description else []
        results.append(Result(int(cursor.rowcount), rows, int(cursor.lastrowid or 0)))
    await cursor.nextset()  # COMMIT's: read, so nothing is left on the connection
    return results


@dataclass(frozen=True, slots=True)
class Result:
    rowcount: int  # rows changed (or, for a SELECT, found)
    rows: list[tuple[Any, ...]]  # a SELECT's rows; empty for the others
    last_insert_id: int = 0  # as the statement's OK packet carries it


class Transaction:
    def __init__(self, cursor: Any, *, timeout: float, address: DatabaseAddress) -> None:
        self._cursor = cursor
        self._timeout = timeout
        self._address = address

    async def execute(self, sql: str, args: Sequence[object] | None = None) -> int:
        """Run one statement within the timeout; the rows it changed."""
        with spans.statement(sql, self._address):
            async with asyncio.timeout(self._timeout):
                await self._cursor.execute(sql, args)
        return int(self._cursor.rowcount)

    async def fetchall(self) -> list[tuple[Any, ...]]:
        async with asyncio.timeout(self._timeout):
            return list(await self._cursor.fetchall())
