"""The schema revision this code is written for, and the services' start-up check of it.

The migrations (db/migrations, run by Alembic through `make migrate`) record the revision they
brought the database to in alembic_version, and so does db/init.sql. The services read it with
one query instead of asking Alembic, so neither needs Alembic at run time (the worker's image
has none). tests/test_migrations.py holds SCHEMA_REVISION equal to the migrations' head.
"""

from __future__ import annotations

import logging

from common.errors import DatabaseUnavailable, SchemaOutdated
from common.mysql.connection import Database
from common.settings import Settings

logger = logging.getLogger(__name__)

SCHEMA_REVISION = "0007"


async def database_revision(database: Database) -> str | None:
    """The revision recorded in alembic_version; None without one (a database made before
    migrations, or never migrated)."""
    async with database.cursor() as cursor:
        # Asked first: selecting from a missing table would be an error like a lost grant.
        await cursor.execute(
            "SELECT COUNT(*) FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name = 'alembic_version'"
        )
        [(tables,)] = await cursor.fetchall()
        if not tables:
            return None
        await cursor.execute("SELECT version_num FROM alembic_version")
        rows = await cursor.fetchall()
    return ",".join(sorted(str(row[0]) for row in rows)) or None


async def require_schema_revision(database: Database) -> None:
    """SchemaOutdated unless the database is at SCHEMA_REVISION."""
    found = await database_revision(database)
    if found == SCHEMA_REVISION:
        return
    at = f"is at revision {found}" if found else "has no revision (no alembic_version row)"
    raise SchemaOutdated(
        f"the database schema {at}, this version needs {SCHEMA_REVISION}: run make migrate"
    )


async def check_schema_at_start(settings: Settings) -> None:
    """A service's check before it starts, on a connection of its own: SchemaOutdated if the
    database answers at another revision. A database that does not answer is only logged:
    the services start without it and wait for it, as they always have."""
    database = Database(settings)
    try:
        await database.start()
        await require_schema_revision(database)
    except DatabaseUnavailable as exc:
        logger.warning(
            "schema revision not checked: database unavailable", extra={"error": str(exc)}
        )
    finally:
        await database.close()
