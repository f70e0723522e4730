"""pytest fixtures shared by the suites that stage outages. A test module defines `direct`
(settings reaching its scratch database and vhost) and imports these by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.settings import Settings
from testkit.proxy import TcpProxy, tcp_proxy


@pytest.fixture(scope="module")
def db_proxy(direct: Settings) -> Iterator[TcpProxy]:
    with tcp_proxy(direct.database.host, direct.database.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def broker_proxy(direct: Settings) -> Iterator[TcpProxy]:
    with tcp_proxy(direct.rabbitmq_host, direct.rabbitmq_port) as proxy:
        yield proxy
