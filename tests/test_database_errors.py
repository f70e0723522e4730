"""The MySQL adapter's boundary: whatever the driver raises leaves as DatabaseUnavailable
(DatabaseRefused when the server answered "no" to the statement), deadlock victims run again,
and a connection that failed is never handed out again. A scripted pool stands in for the
server, which cannot be made to pick a deadlock victim, or to fail in every way a driver can,
on cue; the real fault shapes are staged through a proxy in tests/test_fault_shapes.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asyncmy.errors import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)

from common.errors import DatabaseRefused, DatabaseUnavailable
from common.mysql import Database, MySQLTaskRepository, grouped_repository
from common.mysql.errors import translated
from common.settings import load_settings
from common.tasks import NewTask

pytestmark = pytest.mark.unit


class ScriptedConnection:
    """Raises the scripted errors, one per statement, then answers; records being closed."""

    def __init__(self, errors: list[BaseException], *, hang: bool = False) -> None:
        self.errors = errors
        self.hang = hang
        self.statements: list[str] = []
        self.rowcount = 0
        self.description: Any = None
        self.lastrowid = 0
        self.closed = False

    @asynccontextmanager
    async def cursor(self) -> AsyncIterator[ScriptedConnection]:
        yield self

    async def execute(self, sql: str, args: Any) -> None:
        self.statements.append(sql)
        if self.hang:
            await asyncio.Event().wait()  # a server that never answers
        if self.errors:
            raise self.errors.pop(0)
        self.rowcount = 2

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return []

    async def nextset(self) -> bool:
        """The next result of a multi-statement script (each answers `rowcount` rows)."""
        return True

    def close(self) -> None:
        self.closed = True


class ScriptedPool:
    """asyncmy's pool as the adapter uses it: acquire (awaitable), release, close."""

    def __init__(
        self, connection: ScriptedConnection, *, acquire_error: BaseException | None = None
    ) -> None:
        self.connection = connection
        self.acquire_error = acquire_error
        self.released: list[ScriptedConnection] = []

    async def acquire(self) -> ScriptedConnection:
        if self.acquire_error is not None:
            raise self.acquire_error
        return self.connection

    def release(self, connection: ScriptedConnection) -> None:
        self.released.append(connection)

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> list[ScriptedPool]:
    """Database.start() opens the next pool put in this list instead of a real one."""
    pools: list[ScriptedPool] = []

    async def create_pool(**_: object) -> ScriptedPool:
        return pools.pop(0)

    monkeypatch.setattr("common.mysql.connection.asyncmy.create_pool", create_pool)
    return pools


async def database_on(
    pools: list[ScriptedPool], pool: ScriptedPool, *, timeout: float = 5
) -> Database:
    pools.append(pool)
    database = Database(load_settings(database_timeout_seconds=timeout))
    await database.start()
    return database


def deadlock() -> OperationalError:
    return OperationalError(1213, "Deadlock found when trying to get lock")


async def test_a_deadlock_victim_is_run_again(scripted: list[ScriptedPool]) -> None:
    connection = ScriptedConnection([deadlock(), deadlock()])
    repository = MySQLTaskRepository(await database_on(scripted, ScriptedPool(connection)))

    assert await repository.fail("t", "boom") is True
    # The whole transaction again, in one round trip: the transition, its count, its event,
    # its webhook delivery (if it has a callback_url), the commit.
    assert len(connection.statements) == 3
    assert [part.split()[:3] for part in connection.statements[-1].split("; ")] == [
        ["SET", "TRANSACTION", "ISOLATION"],  # READ COMMITTED
        ["BEGIN"],
        ["UPDATE", "tasks", "SET"],
        ["INSERT", "INTO", "task_counts"],
        ["INSERT", "INTO", "task_events"],
        ["INSERT", "INTO", "webhook_deliveries"],
        ["COMMIT"],
    ]


async def test_three_deadlocks_in_a_row_are_unavailable(scripted: list[ScriptedPool]) -> None:
    connection = ScriptedConnection([deadlock(), deadlock(), deadlock()])
    repository = MySQLTaskRepository(await database_on(scripted, ScriptedPool(connection)))

    with pytest.raises(DatabaseUnavailable, match="1213"):
        await repository.fail("t", "boom")
    assert len(connection.statements) == 3


async def test_other_errors_are_not_retried(scripted: list[ScriptedPool]) -> None:
    connection = ScriptedConnection([OperationalError(2013, "Lost connection to MySQL server")])
    repository = MySQLTaskRepository(await database_on(scripted, ScriptedPool(connection)))

    with pytest.raises(DatabaseUnavailable, match="2013"):
        await repository.fail("t", "boom")
    assert len(connection.statements) == 1


@pytest.mark.parametrize(
    "error",
    [
        OperationalError(4025, "CONSTRAINT `tasks.metadata` failed"),
        OperationalError(1054, "Unknown column 'dispatched_at'"),
        ProgrammingError(1146, "Table 'tasks.tasks' doesn't exist"),
        DataError(1406, "Data too long for column 'title'"),
        IntegrityError(1062, "Duplicate entry"),
    ],
    ids=["check-constraint", "unknown-column", "no-table", "data-too-long", "duplicate-key"],
)
async def test_a_statement_the_server_refuses_is_database_refused(
    scripted: list[ScriptedPool], error: Exception
) -> None:
    connection = ScriptedConnection([error])
    repository = MySQLTaskRepository(await database_on(scripted, ScriptedPool(connection)))

    with pytest.raises(DatabaseRefused, match=str(error.args[0])):
        await repository.fail("t", "boom")


# What drivers raise when a connection dies in an unexpected place: each seen from asyncmy or
# aiormq against a proxy that closes connections during their handshake.
UNFORESEEN = [
    RuntimeError("Transport does not expose socket instance"),
    RuntimeError("async generator raised StopAsyncIteration"),
    InterfaceError(0, ""),
    ConnectionResetError(104, "Connection reset by peer"),
    AttributeError("'NoneType' object has no attribute 'write'"),
    OperationalError(2013, "Lost connection to MySQL server"),
]


@pytest.mark.parametrize("error", UNFORESEEN, ids=lambda e: type(e).__name__)
async def test_whatever_the_driver_raises_mid_statement_is_unavailable_and_the_connection_is_dropped(
    scripted: list[ScriptedPool], error: Exception
) -> None:
    connection = ScriptedConnection([error])
    pool = ScriptedPool(connection)
    repository = grouped_repository(await database_on(scripted, pool))

    with pytest.raises(DatabaseUnavailable) as caught:
        await repository.get("t")
    assert not isinstance(caught.value, DatabaseRefused)
    assert caught.value.__cause__ is error
    assert connection.closed  # never handed to the next caller
    assert pool.released == [connection]


@pytest.mark.parametrize("error", UNFORESEEN, ids=lambda e: type(e).__name__)
async def test_whatever_the_driver_raises_while_connecting_is_unavailable(
    scripted: list[ScriptedPool], error: Exception
) -> None:
    pool = ScriptedPool(ScriptedConnection([]), acquire_error=error)
    repository = grouped_repository(await database_on(scripted, pool))

    with pytest.raises(DatabaseUnavailable):
        await repository.create(NewTask("t", "title", "d", None))
    with pytest.raises(DatabaseUnavailable):
        await repository.ping()


async def test_a_server_that_never_answers_is_unavailable_within_the_timeout(
    scripted: list[ScriptedPool],
) -> None:
    connection = ScriptedConnection([], hang=True)
    repository = grouped_repository(
        await database_on(scripted, ScriptedPool(connection), timeout=0.2)
    )

    async with asyncio.timeout(2):  # the adapter's own timeout ends it well before
        with pytest.raises(DatabaseUnavailable, match=r"within 0\.2 s"):
            await repository.get("t")
        with pytest.raises(DatabaseUnavailable):
            await repository.release_for_retry("t", "boom")
    assert connection.closed


async def test_an_unstarted_database_is_unavailable_not_a_crash() -> None:
    repository = MySQLTaskRepository(Database(load_settings()))
    with pytest.raises(DatabaseUnavailable, match="not connected"):
        await repository.get("t")


async def test_a_future_cancelled_under_its_caller_is_unavailable() -> None:
    result: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    result.cancel()  # as a batch's result is when the task writing it is cancelled
    with pytest.raises(DatabaseUnavailable, match="cancelled"), translated(timeout=5):
        await result


async def test_a_caller_that_goes_away_stops_at_once_whether_its_batch_is_written_or_waiting(
    scripted: list[ScriptedPool],
) -> None:
    connection = ScriptedConnection([], hang=True)
    repository = grouped_repository(await database_on(scripted, ScriptedPool(connection)))
    reading = asyncio.create_task(repository.get("a"))
    waiting = asyncio.create_task(repository.get("b"))
    await asyncio.sleep(0)  # one turn of the loop: the first batch is being written
    reading.cancel()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    with pytest.raises(asyncio.CancelledError):
        await waiting
