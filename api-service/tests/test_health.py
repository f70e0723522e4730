"""GET /health/live, /health/ready and /health against the API as a real process, with its
database and broker behind the test proxies: live answers while both are cut; ready is a 503
problem naming each part that is missing (the database, the broker, a schema at another
revision) and 200 again once it is back; /health answers as ready does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from common.mysql.revision import SCHEMA_REVISION
from common.settings import Settings
from testkit.polling import wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.proxy import TcpProxy
from testkit.scratch import service_environment
from testkit.sql import query

pytestmark = pytest.mark.integration

RECOVERY_SECONDS = 5.0
ALL_OK = {"database": "ok", "broker": "ok", "schema": "ok"}

Probe = Callable[[], Awaitable[dict[str, Any] | None]]


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"api_port": free_port(), "log_format": "json"}


@pytest.fixture(scope="module")
async def client(
    proxied: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    log = tmp_path_factory.mktemp("api") / "api.log"
    with service_process("api-service", service_environment(proxied), log) as api:
        async with api_client(f"http://127.0.0.1:{proxied.api_port}") as client:
            await wait_until(lambda: ready(client), timeout=30, what="the API ready")
            yield client
        assert api.poll() is None, "the API died"
    assert "unhandled error" not in log.read_text()


async def ready(client: httpx.AsyncClient) -> bool:
    """/health/ready and /health both 200, every part ok (a refused connection: not yet)."""
    try:
        answers = [await client.get(path) for path in ("/health/ready", "/health")]
    except httpx.TransportError:
        return False
    return all(r.status_code == 200 and r.json()["checks"] == ALL_OK for r in answers)


async def live(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def not_ready_with(checks: dict[str, str], client: httpx.AsyncClient) -> Probe:
    """A probe for wait_until: the 503 problem of /health/ready once its checks are `checks`
    (the same from /health), None before."""

    async def probe() -> dict[str, Any] | None:
        response = await client.get("/health/ready")
        if response.status_code == 200:
            return None
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem: dict[str, Any] = response.json()
        if problem["checks"] != checks:
            return None
        alias = await client.get("/health")
        assert (alias.status_code, alias.json()["checks"]) == (503, checks)
        return problem

    return probe


def detail_naming(checks: dict[str, str]) -> str:
    return "not ready: " + ", ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")


async def test_ready_and_live_answer_200_while_every_part_is_there(
    client: httpx.AsyncClient,
) -> None:
    assert await ready(client)
    await live(client)


async def test_live_answers_while_the_database_and_the_broker_are_cut(
    client: httpx.AsyncClient, db_proxy: TcpProxy, broker_proxy: TcpProxy
) -> None:
    checks = {"database": "unavailable", "broker": "unavailable", "schema": "unknown"}
    db_proxy.cut()
    broker_proxy.cut()
    try:
        problem = await wait_until(
            not_ready_with(checks, client), timeout=10, what="ready naming both"
        )
        assert problem["type"] == "/problems/service-unavailable"
        assert (
            problem["detail"]
            == "not ready: database unavailable, broker unavailable, schema unknown"
        )
        for _ in range(5):
            await live(client)
    finally:
        db_proxy.restore()
        broker_proxy.restore()
    await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")


async def test_ready_names_the_database_while_it_is_cut(
    client: httpx.AsyncClient, db_proxy: TcpProxy
) -> None:
    # The schema's revision is read from the database too: unknown while it does not answer.
    checks = {"database": "unavailable", "broker": "ok", "schema": "unknown"}
    db_proxy.cut()
    try:
        problem = await wait_until(
            not_ready_with(checks, client), timeout=10, what="ready naming the database"
        )
        assert problem["detail"] == detail_naming(checks)
        await live(client)
    finally:
        db_proxy.restore()
    await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")


async def test_ready_names_the_broker_while_it_is_cut(
    client: httpx.AsyncClient, broker_proxy: TcpProxy
) -> None:
    checks = {"database": "ok", "broker": "unavailable", "schema": "ok"}
    broker_proxy.cut()
    try:
        problem = await wait_until(
            not_ready_with(checks, client), timeout=10, what="ready naming the broker"
        )
        assert problem["detail"] == detail_naming(checks)
        await live(client)
    finally:
        broker_proxy.restore()
    await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")


async def test_ready_names_the_schema_while_the_database_is_at_another_revision(
    client: httpx.AsyncClient, direct: Settings
) -> None:
    checks = {"database": "ok", "broker": "ok", "schema": "outdated"}
    await query(direct.database, "UPDATE alembic_version SET version_num = '0001'")
    try:
        problem = await wait_until(
            not_ready_with(checks, client), timeout=10, what="ready naming the schema"
        )
        assert problem["detail"] == "not ready: schema outdated"
        await live(client)
    finally:
        await query(direct.database, "UPDATE alembic_version SET version_num = %s", SCHEMA_REVISION)
    await wait_until(lambda: ready(client), timeout=RECOVERY_SECONDS, what="ready again")
