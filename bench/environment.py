"""A database and a RabbitMQ vhost of the run's own, and the connections the suite uses."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

import aio_pika

from bench.queues import Queues
from bench.store import TaskTable, open_table
from common.mysql.schema import create_database, drop_database, load_schema
from common.settings import Settings, load_settings
from testkit.scratch import VhostAdmin, database_url, scratch_name, service_environment


@dataclass(frozen=True, slots=True)
class BenchEnvironment:
    settings: Settings
    table: TaskTable
    queues: Queues
    workdir: Path

    def service_env(self, **overrides: object) -> dict[str, str]:
        """The environment for a child process: the bench database and vhost, JSON logs."""
        return service_environment(load_settings(**{**self.settings.model_dump(), **overrides}))

    @property
    def peer_database_url(self) -> str:
        address = self.settings.database
        return database_url(address).replace("mysql://", "mysql+pymysql://", 1)

    @property
    def peer_broker_url(self) -> str:
        s = self.settings
        user = quote(s.rabbitmq_user, safe="")
        password = quote(s.rabbitmq_password.get_secret_value(), safe="")
        vhost = quote(s.rabbitmq_vhost, safe="")
        return f"amqp://{user}:{password}@{s.rabbitmq_host}:{s.rabbitmq_port}/{vhost}"


@asynccontextmanager
async def bench_environment() -> AsyncIterator[BenchEnvironment]:
    """Make the scratch database (db/init.sql) and vhost; drop both on the way out."""
    base = load_settings()
    name = scratch_name("tasks_bench")
    address = replace(base.database, database=name)
    settings = load_settings(
        database_url=database_url(address), rabbitmq_vhost=name, log_format="json"
    )
    await create_database(address)
    admin = VhostAdmin(base)
    try:
        await load_schema(address)
        admin.add(name)
        try:
            async with _connections(settings) as (table, queues):
                with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
                    yield BenchEnvironment(settings, table, queues, Path(workdir))
        finally:
            admin.delete(name)
    finally:
        await drop_database(address)


@asynccontextmanager
async def _connections(settings: Settings) -> AsyncIterator[tuple[TaskTable, Queues]]:
    table = await open_table(settings)
    try:
        connection = await aio_pika.connect_robust(
            host=settings.rabbitmq_host,
            port=settings.rabbitmq_port,
            login=settings.rabbitmq_user,
            password=settings.rabbitmq_password.get_secret_value(),
            virtualhost=settings.rabbitmq_vhost,
            client_properties={"connection_name": "bench"},
        )
        try:
            yield table, Queues(connection, settings)
        finally:
            await connection.close()
    finally:
        await table.close()
