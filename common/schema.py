"""`python -m common.schema`: create the database in DATABASE_URL if missing and load db/init.sql.

Also used by the tests to make and drop scratch databases.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import asyncmy

from common.errors import ConfigurationError
from common.settings import DatabaseAddress, load_settings

INIT_SQL = Path(__file__).resolve().parents[1] / "db" / "init.sql"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


def split_statements(script: str) -> list[str]:
    """The statements of a plain SQL script: `--` comments dropped, split on `;`."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


async def _execute(address: DatabaseAddress, statements: list[str], *, database: bool) -> None:
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
            for statement in statements:
                await cursor.execute(statement)
    finally:
        await connection.ensure_closed()


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


async def _setup(address: DatabaseAddress) -> None:
    await create_database(address)
    await load_schema(address)


def main() -> None:
    try:
        address = load_settings().database
    except ConfigurationError as exc:
        sys.exit(str(exc))
    asyncio.run(_setup(address))
    sys.stdout.write(f"database {address.database} on {address.host}:{address.port} is ready\n")


if __name__ == "__main__":
    main()
