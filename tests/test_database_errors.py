"""How the repository treats driver errors: deadlock victims run again, the rest become
DatabaseUnavailable at once (DatabaseRefused when the server answered "no"). A scripted cursor stands in for the server, which cannot be
made to pick a deadlock victim on cue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asyncmy.errors import DataError, IntegrityError, OperationalError

from common.database import MySQLTaskRepository
from common.errors import DatabaseRefused, DatabaseUnavailable

pytestmark = pytest.mark.unit


class ScriptedCursor:
    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.statements: list[str] = []
        self.rowcount = 0

    async def execute(self, sql: str, args: Any) -> None:
        self.statements.append(sql)
        if self.errors:
            raise self.errors.pop(0)
        self.rowcount = 2


class ScriptedPool:
    """pool.acquire() -> connection, connection.cursor() -> the scripted cursor."""

    def __init__(self, cursor: ScriptedCursor) -> None:
        self.scripted = cursor

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[ScriptedPool]:
        yield self

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[ScriptedCursor]:
        yield self.scripted


def deadlock() -> OperationalError:
    return OperationalError(1213, "Deadlock found when trying to get lock")


async def test_a_deadlock_victim_is_run_again() -> None:
    cursor = ScriptedCursor([deadlock(), deadlock()])
    repository = MySQLTaskRepository(ScriptedPool(cursor), timeout=5)

    assert await repository.fail("t", "boom") is True
    assert len(cursor.statements) == 3


async def test_three_deadlocks_in_a_row_are_unavailable() -> None:
    cursor = ScriptedCursor([deadlock(), deadlock(), deadlock()])
    repository = MySQLTaskRepository(ScriptedPool(cursor), timeout=5)

    with pytest.raises(DatabaseUnavailable, match="1213"):
        await repository.fail("t", "boom")
    assert len(cursor.statements) == 3


async def test_other_errors_are_not_retried() -> None:
    cursor = ScriptedCursor([OperationalError(2013, "Lost connection to MySQL server")])
    repository = MySQLTaskRepository(ScriptedPool(cursor), timeout=5)

    with pytest.raises(DatabaseUnavailable, match="2013"):
        await repository.fail("t", "boom")
    assert len(cursor.statements) == 1


@pytest.mark.parametrize(
    "error",
    [
        OperationalError(4025, "CONSTRAINT `tasks.metadata` failed"),
        OperationalError(1054, "Unknown column 'dispatched_at'"),
        DataError(1406, "Data too long for column 'title'"),
        IntegrityError(1062, "Duplicate entry"),
    ],
    ids=["check-constraint", "unknown-column", "data-too-long", "duplicate-key"],
)
async def test_a_statement_the_server_refuses_is_database_refused(error: Exception) -> None:
    repository = MySQLTaskRepository(ScriptedPool(ScriptedCursor([error])), timeout=5)

    with pytest.raises(DatabaseRefused, match=str(error.args[0])):
        await repository.fail("t", "boom")


async def test_a_lost_connection_is_unavailable_not_refused() -> None:
    cursor = ScriptedCursor([OperationalError(2013, "Lost connection to MySQL server")])
    repository = MySQLTaskRepository(ScriptedPool(cursor), timeout=5)

    with pytest.raises(DatabaseUnavailable) as caught:
        await repository.fail("t", "boom")
    assert not isinstance(caught.value, DatabaseRefused)
