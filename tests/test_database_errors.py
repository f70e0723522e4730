"""How the repository treats driver errors: deadlock victims run again, the rest become
DatabaseUnavailable at once. A scripted cursor stands in for the server, which cannot be
made to pick a deadlock victim on cue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asyncmy.errors import OperationalError

from common.database import MySQLTaskRepository
from common.errors import DatabaseUnavailable

pytestmark = pytest.mark.unit


class ScriptedCursor:
    def __init__(self, errors: list[OperationalError]) -> None:
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
