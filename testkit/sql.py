"""Plain SQL on a database of the test run's own, for checks and reports."""

from __future__ import annotations

from typing import Any

import asyncmy

from common.settings import DatabaseAddress


async def query(address: DatabaseAddress, sql: str, *args: object) -> list[tuple[Any, ...]]:
    connection = await asyncmy.connect(
        host=address.host,
        port=address.port,
        user=address.user,
        password=address.password,
        db=address.database,
        autocommit=True,
        charset="utf8mb4",
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql, args or None)
            return list(await cursor.fetchall())
    finally:
        await connection.ensure_closed()
