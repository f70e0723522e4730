"""The migrations (db/migrations) on the real server: a database made from the schema before
them keeps every row on its way to head, an empty database taken through all of them equals
db/init.sql, and the way down and back up again works.

Alembic runs as `make migrate` runs it, a process of its own with DATABASE_URL set.
"""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from common.mysql.counts import SHARDS
from common.mysql.revision import SCHEMA_REVISION
from common.mysql.schema import INIT_SQL
from common.settings import DatabaseAddress
from common.tasks import TaskStatus
from testkit.deployment import ROOT, load_compose
from testkit.scratch import database_url, scratch_database
from testkit.sql import query

ALEMBIC_INI = ROOT / "db" / "alembic.ini"
# db/init.sql as it was when the migrations came in: what revision 0001 is.
INIT_0001 = (Path(__file__).parent / "data" / "init_0001.sql").read_text()

COLUMNS_0001 = (
    "id, title, description, status, metadata, attempts, last_error, dispatched_at,"
    " lease_expires_at, claim_token, created_at, updated_at, completed_at"
)  # The first db/init.sql: before the outbox (dispatched_at) and the grouped writes (claim_token).
FIRST_INIT_SQL = """
CREATE TABLE tasks (
    id               VARCHAR(36)  NOT NULL,
    title            VARCHAR(255) NOT NULL,
    description      MEDIUMTEXT,
    status           ENUM('PENDING', 'PROCESSING', 'COMPLETED', 'FAILED') NOT NULL DEFAULT 'PENDING',
    metadata         JSON         NULL,
    attempts         INT UNSIGNED NOT NULL DEFAULT 0,
    last_error       VARCHAR(500) NULL DEFAULT NULL,
    lease_expires_at DATETIME(6)  NULL DEFAULT NULL,
    created_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at       DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    completed_at     DATETIME(6)  NULL DEFAULT NULL,
    PRIMARY KEY (id),
    KEY idx_tasks_status_created (status, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci
"""

T = datetime(2026, 11, 28, 1, 50, 46, 605123)
# One row per status, every nullable column NULL somewhere and set somewhere else.
ROWS_0001: list[tuple[Any, ...]] = [
    ("p-1", "plain", None, "PENDING", None, 0, None, None, None, None, T, T, None),
    (
        "r-2",
        "🚀 ünïcode title",
        "x" * 70_000 + " 😀",  # past TEXT's 65,535 bytes: MEDIUMTEXT
        "PROCESSING",
        '{"k": "välue 🚀", "n": [1, 2.5, null], "nested": {"a": true}}',
        2,
        "TimeoutError: the first attempt",
        T,
        datetime(2026, 11, 28, 1, 51, 46, 1),
        "a" * 32,
        T,
        datetime(2026, 11, 28, 1, 50, 47, 999999),
        None,
    ),
    ("c-3", "done", "d", "COMPLETED", "[]", 1, None, T, None, "b" * 32, T, T, T),
    ("f-4", "failed", "", "FAILED", '{"x": ""}', 5, "é" * 500, T, None, None, T, T, T),
]


async def alembic(address: DatabaseAddress, *args: str) -> tuple[int, str]:
    """`python -m alembic -c db/alembic.ini ARGS` on `address`: exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        "-c",
        str(ALEMBIC_INI),
        *args,
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url(address)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def migrated(address: DatabaseAddress, *args: str) -> None:
    code, output = await alembic(address, *args)
    assert code == 0, output


async def schema_of(address: DatabaseAddress) -> dict[str, list[tuple[Any, ...]]]:
    """Tables, columns and indexes as information_schema describes them."""
    where = "WHERE table_schema = DATABASE()"
    return {
        "tables": await query(
            address,
            f"SELECT table_name, engine, table_collation, create_options"
            f" FROM information_schema.tables {where} ORDER BY table_name",
        ),
        "columns": await query(
            address,
            f"SELECT table_name, column_name, ordinal_position, column_type, is_nullable,"
            f" column_default, character_set_name, collation_name, extra"
            f" FROM information_schema.columns {where} ORDER BY table_name, ordinal_position",
        ),
        "indexes": await query(
            address,
            f"SELECT table_name, index_name, seq_in_index, column_name, non_unique, collation,"
            f" sub_part, index_type FROM information_schema.statistics {where}"
            f" ORDER BY table_name, index_name, seq_in_index",
        ),
    }


async def revision_of(address: DatabaseAddress) -> list[str]:
    return [row[0] for row in await query(address, "SELECT version_num FROM alembic_version")]


async def insert_rows(address: DatabaseAddress) -> None:
    placeholders = ", ".join(["%s"] * len(ROWS_0001[0]))
    for row in ROWS_0001:
        await query(address, f"INSERT INTO tasks ({COLUMNS_0001}) VALUES ({placeholders})", *row)


async def count_rows(address: DatabaseAddress) -> list[tuple[Any, ...]]:
    """task_counts summed per status, in the ENUM's order."""
    return await query(
        address,
        "SELECT status, CAST(SUM(n) AS SIGNED) FROM task_counts GROUP BY status ORDER BY status",
    )


async def rows_0001(address: DatabaseAddress) -> list[tuple[Any, ...]]:
    return await query(address, f"SELECT {COLUMNS_0001} FROM tasks ORDER BY id")


@pytest.mark.unit
def test_the_code_needs_the_newest_migration() -> None:
    script = ScriptDirectory.from_config(Config(str(ALEMBIC_INI)))
    assert script.get_heads() == [SCHEMA_REVISION]  # one head: the history is a line
    assert [rev.revision for rev in script.walk_revisions()] == [
        "0007",
        "0006",
        "0005",
        "0004",
        "0003",
        "0002",
        "0001",
    ]


@pytest.mark.unit
def test_compose_migrates_before_the_services_start() -> None:
    services = load_compose()["services"]
    migrate = services["migrate"]
    assert migrate["build"]["dockerfile"] == "api-service/Dockerfile"
    assert migrate["command"][-2:] == ["upgrade", "head"]
    assert migrate["depends_on"]["mysql_db"]["condition"] == "service_healthy"
    for service in ("api_service", "worker_service"):
        condition = services[service]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"


@pytest.mark.unit
def test_the_services_need_no_alembic() -> None:
    # They read the revision with a query (common/mysql/revision.py); only `migrate` runs Alembic.
    for folder in ("common", "api-service/src", "worker-service/src"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not {"alembic", "sqlalchemy"} & imported_packages(path), path
    assert "alembic==" in (ROOT / "api-service" / "requirements.txt").read_text()
    worker = (ROOT / "worker-service" / "requirements.txt").read_text()
    assert "alembic==" not in worker
    assert "sqlalchemy==" not in worker


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.integration
async def test_a_database_from_the_old_init_sql_keeps_every_row_on_its_way_to_head() -> None:
    async with (
        scratch_database(INIT_0001) as old,
        scratch_database(INIT_SQL.read_text()) as head,
    ):
        await insert_rows(old)
        before = await rows_0001(old)
        assert len(before) == len(ROWS_0001)

        await migrated(old, "upgrade", "head")

        assert await rows_0001(old) == before
        assert await query(old, "SELECT started_at FROM tasks") == [(None,)] * len(ROWS_0001)
        # One event per existing task, its state now: its event stream starts from it.
        events = await query(
            old,
            "SELECT e.status, e.attempts, e.created_at FROM task_events e"
            " JOIN tasks t ON t.id = e.task_id AND t.status = e.status"
            " AND t.attempts = e.attempts AND t.updated_at = e.created_at",
        )
        assert len(events) == len(ROWS_0001)
        # The counts start from the rows.
        assert await count_rows(old) == [
            (s, 1) for s in ("PENDING", "PROCESSING", "COMPLETED", "FAILED")
        ] + [("CANCELLED", 0)]
        assert await revision_of(old) == [SCHEMA_REVISION]
        assert await schema_of(old) == await schema_of(head)
        await migrated(old, "upgrade", "head")  # at head: nothing to do
        assert await rows_0001(old) == before


@pytest.mark.integration
async def test_all_migrations_on_an_empty_database_make_what_init_sql_makes() -> None:
    async with scratch_database() as migrated_db, scratch_database(INIT_SQL.read_text()) as loaded:
        await migrated(migrated_db, "upgrade", "head")
        migrated_schema, loaded_schema = await schema_of(migrated_db), await schema_of(loaded)
        for part in ("tables", "columns", "indexes"):
            assert migrated_schema[part] == loaded_schema[part], part
        assert {row[0] for row in loaded_schema["tables"]} >= {"tasks", "alembic_version"}
        shards = "SELECT status, shard, n FROM task_counts ORDER BY status, shard"
        seeded = await query(loaded, shards)
        assert await query(migrated_db, shards) == seeded
        assert len(seeded) == len(TaskStatus) * SHARDS
        assert {n for _, _, n in seeded} == {0}
        assert await revision_of(migrated_db) == await revision_of(loaded) == [SCHEMA_REVISION]


@pytest.mark.integration
async def test_down_to_0001_and_up_again() -> None:
    async with (
        scratch_database(INIT_0001) as old,
        scratch_database(INIT_SQL.read_text()) as head,
        scratch_database(INIT_0001) as reference,
    ):
        await insert_rows(old)
        before = await rows_0001(old)
        await migrated(old, "upgrade", "head")

        await migrated(old, "downgrade", "0001")
        assert await revision_of(old) == ["0001"]
        down = await schema_of(old)
        expected = await schema_of(reference)
        for part in ("tables", "columns", "indexes"):
            assert [r for r in down[part] if r[0] != "alembic_version"] == expected[part], part
        assert await rows_0001(old) == before

        await migrated(old, "upgrade", "head")
        assert await schema_of(old) == await schema_of(head)
        assert await rows_0001(old) == before


@pytest.mark.integration
async def test_the_way_down_refuses_a_status_0001_cannot_store() -> None:
    async with scratch_database() as address:
        await migrated(address, "upgrade", "head")
        await query(address, "INSERT INTO tasks (id, title, status) VALUES ('x', 't', 'CANCELLED')")
        code, output = await alembic(address, "downgrade", "0001")
        assert code != 0
        assert "FAILED: 1 tasks are CANCELLED, which revision 0001 cannot store" in output
        # The steps above 0002 were taken (MySQL cannot roll DDL back); 0002 itself was not.
        assert await revision_of(address) == ["0002"]
        assert await query(address, "SELECT status FROM tasks") == [("CANCELLED",)]


@pytest.mark.integration
async def test_a_tasks_table_older_than_0001_is_refused_with_what_to_do() -> None:
    async with scratch_database(FIRST_INIT_SQL) as address:
        code, output = await alembic(address, "upgrade", "head")
        assert code != 0
        [line] = [line for line in output.splitlines() if line.startswith("FAILED:")]
        assert "it has no dispatched_at, claim_token" in line
        assert "make db" in line
        tables = await query(
            address,
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()",
        )
        assert sorted(row[0] for row in tables) == ["alembic_version", "tasks"]
        assert await revision_of(address) == []
