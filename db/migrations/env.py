"""Alembic's environment: the migrations run on DATABASE_URL, over asyncmy.

The address comes from common.settings, exactly as the services read it, so `make migrate`,
the Compose `migrate` service and the services always agree on which database they mean. The
migrations are plain SQL (`op.execute`): there is no model metadata, and no autogenerate.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from common.errors import ConfigurationError
from common.settings import load_settings

# Two migrators at once (two deploys racing) would both see the old revision; the second waits.
_LOCK = "task-service-migrations"
_LOCK_WAIT_SECONDS = 60


def _database_url() -> URL:
    """DATABASE_URL for SQLAlchemy's asyncmy dialect; URL.create takes the password as it is,
    so characters that a URL would need escaped need nothing here."""
    try:
        address = load_settings().database
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    return URL.create(
        "mysql+asyncmy",
        username=address.user,
        password=address.password,
        host=address.host,
        port=address.port,
        database=address.database,
        query={"charset": "utf8mb4"},
    )


def _migrate(connection: Connection) -> None:
    locked = connection.execute(
        text("SELECT GET_LOCK(:name, :wait)"), {"name": _LOCK, "wait": _LOCK_WAIT_SECONDS}
    ).scalar()
    if locked != 1:
        raise CommandError(f"another migration held the lock for {_LOCK_WAIT_SECONDS} s")
    # Ends the transaction SQLAlchemy began for GET_LOCK (the lock is the session's): Alembic
    # commits only what it began itself.
    connection.commit()
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    url = _database_url()
    # Every connection of the services is UTC (db/init.sql); a migration that writes times is too.
    engine = create_async_engine(
        url, poolclass=NullPool, connect_args={"init_command": "SET time_zone = '+00:00'"}
    )
    try:
        try:
            connection = await engine.connect()
        except DBAPIError as exc:
            where = f"{url.host}:{url.port}/{url.database}"
            raise CommandError(f"cannot reach {where}: {exc.orig}") from None
        try:
            await connection.run_sync(_migrate)
        finally:
            await connection.close()
    finally:
        await engine.dispose()


if context.config.config_file_name:
    fileConfig(context.config.config_file_name)
if context.is_offline_mode():
    raise CommandError("--sql (offline mode) is not supported: db/init.sql is the schema at head")
asyncio.run(_run_online())
