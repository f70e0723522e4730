"""Tenants, through the app with its real lifespan against the real MySQL/MariaDB and
RabbitMQ: with API keys on, a tenant sees, lists, counts, cancels, retries, streams and
replays idempotency keys of its own tasks only; another tenant's task answers exactly as an
id nobody has."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import live_app
from test_submit import VALID

from common.api_keys import new_api_key
from common.mysql import MySQLTaskRepository
from common.settings import Settings, load_settings
from common.tasks import NewTask, TaskStatus
from main import create_app
from services.backends import Backends
from testkit import fixtures
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

repository = fixtures.repository

ALICE_KEY, ALICE = new_api_key("alice")
BOB_KEY, BOB = new_api_key("bob")


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"api_keys": f"{ALICE},{BOB}"}


@pytest.fixture(scope="module")
async def api(direct: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with live_app(direct) as client:
        yield client


async def submitted(api: httpx.AsyncClient, key: str, **headers: str) -> str:
    answer = await api.post("/api/tasks", json=VALID, headers={**as_(key), **headers})
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


def without_id(answer: httpx.Response, task_id: str) -> tuple[int, dict[str, str], str]:
    """The answer with the id it names taken out, to compare with another id's."""
    headers = {k: v for k, v in answer.headers.items() if k not in ("x-request-id", "date")}
    return answer.status_code, headers, answer.text.replace(task_id, "<id>")


@pytest.mark.integration
async def test_another_tenants_task_is_exactly_an_unknown_one(
    api: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    pending = await submitted(api, ALICE_KEY)
    failed = await submitted(api, ALICE_KEY)
    await repository.claim(failed, lease_seconds=60, steal=False)
    assert await repository.fail(failed, "boom")
    unknown = str(uuid.uuid4())
    for method, path in [
        ("GET", "/api/tasks/{}"),
        ("POST", "/api/tasks/{}/cancel"),
        ("POST", "/api/tasks/{}/retry"),
        ("GET", "/api/tasks/{}/events"),
    ]:
        for task_id in (pending, failed):
            foreign = await api.request(method, path.format(task_id), headers=as_(BOB_KEY))
            nobodys = await api.request(method, path.format(unknown), headers=as_(BOB_KEY))
            assert foreign.status_code == 404, (method, path, foreign.text)
            assert without_id(foreign, task_id) == without_id(nobodys, unknown)
    # Nothing was done to them, and their owner still has them.
    assert (await repository.get(pending)).status is TaskStatus.PENDING  # type: ignore[union-attr]
    assert (await repository.get(failed)).status is TaskStatus.FAILED  # type: ignore[union-attr]
    for task_id in (pending, failed):
        assert (await api.get(f"/api/tasks/{task_id}", headers=as_(ALICE_KEY))).status_code == 200
    assert (await api.post(f"/api/tasks/{failed}/retry", headers=as_(ALICE_KEY))).status_code == 202
    assert (
        await api.post(f"/api/tasks/{pending}/cancel", headers=as_(ALICE_KEY))
    ).status_code == 200


@pytest.mark.integration
async def test_lists_and_stats_hold_only_the_callers_tasks(api: httpx.AsyncClient) -> None:
    alices = {await submitted(api, ALICE_KEY) for _ in range(3)}
    bobs = {await submitted(api, BOB_KEY) for _ in range(2)}
    for key, own, other in ((ALICE_KEY, alices, bobs), (BOB_KEY, bobs, alices)):
        for query in ("", "?status=PENDING", "?status=PENDING&status=CANCELLED&limit=100"):
            seen: set[str] = set()
            cursor: str | None = None
            while True:
                page = await api.get(
                    f"/api/tasks{query}",
                    params={} if cursor is None else {"cursor": cursor},
                    headers=as_(key),
                )
                assert page.status_code == 200, page.text
                seen |= {item["task_id"] for item in page.json()["items"]}
                cursor = page.json()["next_cursor"]
                if cursor is None:
                    break
            assert own <= seen
            assert not other & seen
    alice_stats = (await api.get("/api/tasks/stats", headers=as_(ALICE_KEY))).json()
    bob_stats = (await api.get("/api/tasks/stats", headers=as_(BOB_KEY))).json()
    assert bob_stats["counts"]["PENDING"] == 2  # Bob made two; Alice's are not his
    assert alice_stats["total"] >= 3


@pytest.mark.integration
async def test_an_idempotency_key_is_its_tenants_own(api: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    alices = await submitted(api, ALICE_KEY, **key)
    bobs = await submitted(api, BOB_KEY, **key)  # the same key, another tenant: a new task
    assert bobs != alices
    assert await submitted(api, BOB_KEY, **key) == bobs  # Bob's replay is Bob's task
    assert await submitted(api, ALICE_KEY, **key) == alices


@pytest.mark.unit
async def test_a_foreign_id_costs_the_same_reads_as_an_unknown_one() -> None:
    """No timing a client could use: the same one read by id, then the same answer."""
    fake = InMemoryTaskRepository()
    settings = load_settings(api_keys=f"{ALICE},{BOB}")
    app = create_app(settings, Backends(repository=fake, publisher=RecordingPublisher()))
    record = await fake.create(NewTask(str(uuid.uuid4()), "t", "d", None, tenant="alice"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path in ("/api/tasks/{}", "/api/tasks/{}/cancel", "/api/tasks/{}/retry"):
            reads = []
            for task_id in (record.task_id, str(uuid.uuid4())):
                fake.calls.clear()
                method = "GET" if path.endswith("}") else "POST"
                answer = await client.request(method, path.format(task_id), headers=as_(BOB_KEY))
                assert answer.status_code == 404
                reads.append(list(fake.calls))
            assert reads[0] == reads[1] == ["get"], path
