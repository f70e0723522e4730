"""The health port's ASGI app (api.app.RouteTable with api.health's routes) and the readiness
use case (services.health), against fakes: the answers' shapes, the 404 and 405 problems, and
another ASGI app in the table (as /metrics will be) served beside them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, make_asgi_app

from api.app import RouteTable
from api.health import health_routes
from services.health import check_readiness
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit


class Parts:
    """What readiness reports, set by each test."""

    def __init__(self) -> None:
        self.checks = {"consumer": "ok", "database": "ok"}

    async def __call__(self) -> dict[str, str]:
        return dict(self.checks)


@pytest.fixture
def parts() -> Parts:
    return Parts()


@pytest.fixture
async def client(parts: Parts) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=RouteTable(health_routes(readiness=parts)))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        yield client


async def test_live_answers_ok_whatever_the_parts_say(
    client: httpx.AsyncClient, parts: Parts
) -> None:
    parts.checks = {"consumer": "unavailable", "database": "unavailable"}
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


async def test_ready_answers_ok_with_every_part(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"consumer": "ok", "database": "ok"}}


async def test_ready_is_a_503_problem_naming_what_is_missing(
    client: httpx.AsyncClient, parts: Parts
) -> None:
    parts.checks = {"consumer": "unavailable", "database": "ok"}
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "type": "/problems/service-unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "not ready: consumer unavailable",
        "checks": parts.checks,
    }


async def test_other_methods_are_405_and_other_paths_404(client: httpx.AsyncClient) -> None:
    refused = await client.post("/health/ready")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD"
    assert refused.headers["content-type"] == "application/problem+json"
    missing = await client.get("/health")
    assert missing.status_code == 404
    assert (
        missing.json()["detail"] == "no route /health; this port serves /health/live, /health/ready"
    )


async def test_another_asgi_app_in_the_table_is_served_beside_the_health_routes(
    parts: Parts,
) -> None:
    registry = CollectorRegistry()
    Counter("probes", "What a /metrics route would serve", registry=registry).inc()
    routes = health_routes(readiness=parts) | {"/metrics": make_asgi_app(registry)}
    transport = httpx.ASGITransport(app=RouteTable(routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "probes_total 1.0" in metrics.text
        assert (await client.get("/health/ready")).status_code == 200


@pytest.mark.parametrize(
    ("consuming", "broker_answers", "consumer"),
    [(True, True, "ok"), (False, True, "unavailable"), (True, False, "unavailable")],
)
@pytest.mark.parametrize(("database_up", "database"), [(True, "ok"), (False, "unavailable")])
async def test_readiness_is_a_consumer_on_a_broker_that_answers_and_the_database(
    consuming: bool, broker_answers: bool, consumer: str, database_up: bool, database: str
) -> None:
    repository, publisher = InMemoryTaskRepository(), RecordingPublisher()
    if not database_up:
        repository.fail_with_unavailable()
    publisher.is_open = broker_answers
    checks = await check_readiness(
        consuming=lambda: consuming, repository=repository, publisher=publisher
    )
    assert checks == {"consumer": consumer, "database": database}
