"""`python -m common.mysql.schema` (the first step of `make db`): create the database in
DATABASE_URL if missing. Its tables come from the migrations (`make migrate`, db/migrations),
which also bring an existing database forward; loading db/init.sql into a database that has
older tables would leave them old (CREATE TABLE IF NOT EXISTS).

Also used by the tests to make and drop scratch databases, to load db/init.sql into a new one
(the schema at head, faster than migrating), and to look into them.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncmy

from common.errors import ConfigurationError
from common.settings import DatabaseAddress, load_settings

INIT_SQL = Path(__file__).resolve().parents[2] / "db" / "init.sql"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def split_statements(script: str) -> list[str]:
    """The statements of a plain SQL script: `--` comments dropped, split on `;`."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


@asynccontextmanager
async def one_connection(address: DatabaseAddress, *, database: bool = True) -> AsyncIterator[Any]:
    """A cursor on a connection of its own (no pool), inside the database or not."""
    connection = await asyncmy.connect(
        host=address.host,
        port=address.port,
        user=address.user,
        password=address.password,
        db=address.database if database else None,
        autocommit=True,
        charset="utf8mb4",
    )
    try:
        async with connection.cursor() as cursor:
            yield cursor
    finally:
        await connection.ensure_closed()


async def _execute(address: DatabaseAddress, statements: list[str], *, database: bool) -> None:
    async with one_connection(address, database=database) as cursor:
        for statement in statements:
            await cursor.execute(statement)


def _quoted(name: str) -> str:
    if not _SAFE_NAME.match(name):
        raise ValueError(f"unsupported database name {name!r}: use letters, digits and _")
    return f"`{name}`"


async def create_database(address: DatabaseAddress) -> None:
    create = (
        f"CREATE DATABASE IF NOT EXISTS {_quoted(address.database)}"
        " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    await _execute(address, [create], database=False)


async def drop_database(address: DatabaseAddress) -> None:
    await _execute(
        address, [f"DROP DATABASE IF EXISTS {_quoted(address.database)}"], database=False
    )


async def load_schema(address: DatabaseAddress, script: str | None = None) -> None:
    """Run db/init.sql (or `script`) inside the database."""
    text = INIT_SQL.read_text() if script is None else script
    await _execute(address, split_statements(text), database=True)


def main() -> None:
    try:
        address = load_settings().database
    except ConfigurationError as exc:
        sys.exit(str(exc))
    asyncio.run(create_database(address))
    sys.stdout.write(f"database {address.database} on {address.host}:{address.port} exists\n")


if __name__ == "__main__":
    main()
