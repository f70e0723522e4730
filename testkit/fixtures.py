"""pytest fixtures shared by the suites that talk to the real services (loaded with
`-p testkit.fixtures` from each pytest configuration).

Each test module gets a scratch database and vhost of its own: `direct` (settings reaching
them directly), the TCP proxies in front of them for outage tests and `proxied` (settings
reaching them through the proxies), a repository and a confirming channel on them. A module that needs other settings overrides `scratch_overrides`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aio_pika.abc import AbstractChannel

from common.mysql import Database, MySQLTaskRepository
from common.settings import Settings
from testkit.broker import broker_channel
from testkit.proxy import TcpProxy, tcp_proxy
from testkit.scratch import scratch_environment, through_proxies


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    """Settings the module's services run with, besides the scratch database and vhost."""
    return {}


@pytest.fixture(scope="module")
async def direct(scratch_overrides: dict[str, Any]) -> AsyncIterator[Settings]:
    """Settings that reach the module's scratch database and vhost directly."""
    async with scratch_environment(**scratch_overrides) as settings:
        yield settings


@pytest.fixture(scope="module")
async def repository(direct: Settings) -> AsyncIterator[MySQLTaskRepository]:
    database = Database(direct)
    await database.start()
    yield MySQLTaskRepository(database)
    await database.close()


@pytest.fixture(scope="module")
async def channel(direct: Settings) -> AsyncIterator[AbstractChannel]:
    """A confirming channel with the topology declared, on a connection of its own."""
    async with broker_channel(direct) as channel:
        yield channel


@pytest.fixture(scope="module")
def db_proxy(direct: Settings) -> Iterator[TcpProxy]:
    with tcp_proxy(direct.database.host, direct.database.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def broker_proxy(direct: Settings) -> Iterator[TcpProxy]:
    with tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def proxied(direct: Settings, db_proxy: TcpProxy, broker_proxy: TcpProxy) -> Settings:
    """The same database and vhost, reached through the proxies (with short timeouts)."""
    return through_proxies(direct, database_port=db_proxy.port, broker_port=broker_proxy.port)
