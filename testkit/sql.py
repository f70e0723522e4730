"""Plain SQL on a database of the test run's own, for checks and reports."""

from __future__ import annotations

from typing import Any

from common.mysql.schema import one_connection
from common.settings import DatabaseAddress


async def query(address: DatabaseAddress, sql: str, *args: object) -> list[tuple[Any, ...]]:
    async with one_connection(address) as cursor:
        await cursor.execute(sql, args or None)
        return list(await cursor.fetchall())
