"""The services' start-up check of the schema revision: an outdated or unmigrated database
stops a service with one line naming `make migrate`; a database that does not answer does not
stop it (the services start without one, and wait for it)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import SecretStr

from common.errors import SchemaOutdated
from common.mysql import Database
from common.mysql.revision import (
    SCHEMA_REVISION,
    check_schema_at_start,
    database_revision,
    require_schema_revision,
)
from common.settings import Settings
from testkit.processes import free_port, service_process
from testkit.scratch import database_url, service_environment
from testkit.sql import query

pytestmark = pytest.mark.integration

OUTDATED = (
    f"the database schema is at revision 0001, this version needs {SCHEMA_REVISION}:"
    " run make migrate"
)
UNMIGRATED = (
    "the database schema has no revision (no alembic_version row), this version needs"
    f" {SCHEMA_REVISION}: run make migrate"
)


async def set_revision(settings: Settings, revision: str | None) -> None:
    await query(settings.database, "DELETE FROM alembic_version")
    if revision is not None:
        await query(settings.database, "INSERT INTO alembic_version VALUES (%s)", revision)


def run_until_exit(service: str, settings: Settings, log: Path) -> tuple[int, list[str]]:
    """Start the service as `make` does; its exit code and output, within 30 s."""
    env = service_environment(settings.model_copy(update={"api_port": free_port()}))
    with service_process(service, env, log) as process:
        code = process.wait(30)
    return code, log.read_text().splitlines()


@pytest.mark.parametrize("service", ["api-service", "worker-service"])
@pytest.mark.parametrize(("revision", "message"), [("0001", OUTDATED), (None, UNMIGRATED)])
async def test_a_service_refuses_an_outdated_schema_in_one_line(
    direct: Settings, tmp_path: Path, service: str, revision: str | None, message: str
) -> None:
    await set_revision(direct, revision)
    try:
        log = tmp_path / f"{service}.log"
        code, lines = await asyncio.to_thread(run_until_exit, service, direct, log)
    finally:
        await set_revision(direct, SCHEMA_REVISION)
    assert code == 1
    assert lines == [f"{service.removesuffix('-service')}: {message}"]


async def test_the_schema_at_head_passes(direct: Settings) -> None:
    database = Database(direct)
    await database.start()
    try:
        assert await database_revision(database) == SCHEMA_REVISION
        await require_schema_revision(database)
    finally:
        await database.close()
    await check_schema_at_start(direct)


async def test_a_dropped_version_table_is_no_revision(direct: Settings) -> None:
    await query(direct.database, "DROP TABLE alembic_version")
    try:
        with pytest.raises(SchemaOutdated, match="has no revision"):
            await check_schema_at_start(direct)
    finally:
        await query(
            direct.database,
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        )
        await set_revision(direct, SCHEMA_REVISION)


async def test_a_database_that_does_not_answer_is_logged_not_refused(
    direct: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    nowhere = replace(direct.database, port=free_port())  # nothing listens there
    settings = direct.model_copy(update={"database_url": SecretStr(database_url(nowhere))})
    with caplog.at_level(logging.WARNING, logger="common.mysql.revision"):
        await check_schema_at_start(settings)
    assert "schema revision not checked: database unavailable" in caplog.messages
