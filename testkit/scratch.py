"""A database and a RabbitMQ vhost of the test run's own, made and removed around it.

By default both are made with the services' own credentials (DATABASE_URL, RABBITMQ_USER), which
then need to be allowed to. Where the services' users may not (the Compose stack: README, Docker
Compose), test-only variables name other users, read here and by no service:
  MYSQL_TEST_USER, MYSQL_TEST_PASSWORD         on DATABASE_URL's server: makes and drops the
                                               scratch databases; the services under test use it
  RABBITMQ_ADMIN_USER, RABBITMQ_ADMIN_PASSWORD an administrator, for the management API at
                                               RABBITMQ_MANAGEMENT_URL; RABBITMQ_USER is granted
                                               each scratch vhost, which the services then use
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from common.mysql.schema import create_database, drop_database, load_schema
from common.settings import DatabaseAddress, Settings, load_settings


def scratch_name(prefix: str = "tasks_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def scratch_server(settings: Settings) -> DatabaseAddress:
    """DATABASE_URL's server, as MYSQL_TEST_USER when that is set."""
    user = os.environ.get("MYSQL_TEST_USER")
    if not user:
        return settings.database
    return replace(settings.database, user=user, password=os.environ.get("MYSQL_TEST_PASSWORD", ""))


def database_url(address: DatabaseAddress) -> str:
    credentials = quote(address.user, safe="")
    if address.password:
        credentials += ":" + quote(address.password, safe="")
    return f"mysql://{credentials}@{address.host}:{address.port}/{address.database}"


class VhostAdmin:
    """Adds and deletes vhosts through the management API at RABBITMQ_MANAGEMENT_URL when that
    is set (as in the containers), as RABBITMQ_ADMIN_USER when that is set, otherwise with
    rabbitmqctl when this machine has it (and may use it): it speaks to this machine's node,
    which need not be the broker the settings name. Each vhost is granted to the settings'
    RABBITMQ_USER."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.management_url = os.environ.get("RABBITMQ_MANAGEMENT_URL")
        local = os.geteuid() == 0 and not self.management_url
        self.ctl = shutil.which("rabbitmqctl") if local else None

    def _ctl(self, *args: str) -> None:
        assert self.ctl is not None
        subprocess.run([self.ctl, "-q", *args], check=True, capture_output=True, timeout=60)

    def _api(self, method: str, path: str, body: dict[str, str] | None = None) -> None:
        assert self.management_url is not None
        auth = self._management_credentials()
        response = httpx.request(
            method, self.management_url.rstrip("/") + path, json=body, auth=auth, timeout=30
        )
        response.raise_for_status()

    def _management_credentials(self) -> tuple[str, str]:
        admin = os.environ.get("RABBITMQ_ADMIN_USER")
        if admin:
            return admin, os.environ.get("RABBITMQ_ADMIN_PASSWORD", "")
        return self.settings.rabbitmq_user, self.settings.rabbitmq_password.get_secret_value()

    def add(self, vhost: str) -> None:
        user = self.settings.rabbitmq_user
        if self.ctl:
            self._ctl("add_vhost", vhost)
            self._ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        elif self.management_url:
            self._api("PUT", f"/api/vhosts/{quote(vhost, safe='')}")
            grant = {"configure": ".*", "write": ".*", "read": ".*"}
            self._api(
                "PUT", f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}", grant
            )
        else:
            raise RuntimeError(
                "need rabbitmqctl (as root) or RABBITMQ_MANAGEMENT_URL to add a vhost"
            )

    def delete(self, vhost: str) -> None:
        if self.ctl:
            self._ctl("delete_vhost", vhost)
        elif self.management_url:
            self._api("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")


@asynccontextmanager
async def scratch_database(script: str | None = None) -> AsyncIterator[DatabaseAddress]:
    """A new database of its own, empty or loaded from `script`, dropped afterwards."""
    address = replace(scratch_server(load_settings()), database=scratch_name())
    await create_database(address)
    try:
        if script is not None:
            await load_schema(address, script)
        yield address
    finally:
        await drop_database(address)


@asynccontextmanager
async def scratch_environment(**overrides: object) -> AsyncIterator[Settings]:
    """Settings pointing at a new database (loaded from db/init.sql) and a new vhost. Each
    worker started with them gets a free health port of its own (WORKER_HEALTH_PORT=0): the
    machine is shared, and a run may start several."""
    overrides = {"worker_health_port": 0, **overrides}
    base = load_settings()
    name = scratch_name()
    address = replace(scratch_server(base), database=name)
    await create_database(address)
    admin = VhostAdmin(base)
    try:
        await load_schema(address)
        admin.add(name)
        try:
            yield load_settings(
                database_url=database_url(address), rabbitmq_vhost=name, **overrides
            )
        finally:
            admin.delete(name)
    finally:
        await drop_database(address)


def service_environment(settings: Settings) -> dict[str, str]:
    """The environment variables that reproduce `settings` in a child process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    for name, value in settings.model_dump().items():
        secret = getattr(value, "get_secret_value", None)
        env[name.upper()] = "" if value is None else str(secret() if secret else value)
    return env


def through_proxies(settings: Settings, *, database_port: int, broker_port: int) -> Settings:
    """The same database and vhost, reached through TCP proxies on 127.0.0.1, with short
    timeouts so that an outage is noticed quickly."""
    address = replace(settings.database, host="127.0.0.1", port=database_port)
    return settings.model_copy(
        update={
            "database_url": SecretStr(database_url(address)),
            "rabbitmq_host": "127.0.0.1",
            "rabbitmq_port": broker_port,
            "rabbitmq_hosts": "",  # the proxy only, even when RABBITMQ_HOSTS lists a cluster
            "publish_timeout_seconds": 2.0,
            "database_timeout_seconds": 2.0,
            "broker_reconnect_max_seconds": 0.5,
        }
    )
