"""db/init.sql on the real server: columns, index, charset, defaults and UTC timestamps."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.mysql.schema import load_schema
from common.settings import Settings
from testkit.scratch import scratch_environment
from testkit.sql import query

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def settings() -> AsyncIterator[Settings]:
    async with scratch_environment() as settings:
        yield settings


async def test_tasks_table_has_the_spec_columns(settings: Settings) -> None:
    rows = await query(
        settings.database,
        "SELECT column_name, is_nullable, column_default, column_type FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = 'tasks'",
    )
    columns = {row[0].lower(): row[1:] for row in rows}
    for name in (
        "id",
        "title",
        "description",
        "status",
        "metadata",
        "created_at",
        "updated_at",
        "completed_at",
    ):
        assert name in columns
    assert (
        columns["status"][2].lower()
        == "enum('pending','processing','completed','failed','cancelled')"
    )
    assert columns["completed_at"][0] == "YES"
    assert columns["title"][0] == "NO"


async def test_status_created_index_engine_and_charset(settings: Settings) -> None:
    index = await query(
        settings.database,
        "SELECT column_name FROM information_schema.statistics WHERE table_schema = DATABASE()"
        " AND table_name = 'tasks' AND index_name = 'idx_tasks_tenant_status_created'"
        " ORDER BY seq_in_index",
    )
    assert [row[0].lower() for row in index] == ["tenant", "status", "created_at", "id"]
    [(engine, collation)] = await query(
        settings.database,
        "SELECT engine, table_collation FROM information_schema.tables"
        " WHERE table_schema = DATABASE() AND table_name = 'tasks'",
    )
    assert engine == "InnoDB"
    assert collation.startswith("utf8mb4")


async def test_emoji_round_trip_and_defaults(settings: Settings) -> None:
    address = settings.database
    await query(
        address,
        "INSERT INTO tasks (id, title, description) VALUES (%s, %s, %s)",
        "e1",
        "🚀 launch",
        "ok 😀",
    )
    [(title, description, status, completed_at)] = await query(
        address, "SELECT title, description, status, completed_at FROM tasks WHERE id = 'e1'"
    )
    assert (title, description, status, completed_at) == ("🚀 launch", "ok 😀", "PENDING", None)


async def test_loading_the_script_twice_is_harmless(settings: Settings) -> None:
    await load_schema(settings.database)
