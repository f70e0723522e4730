"""The dashboard's reads through the app with its real lifespan, on the real MySQL/MariaDB and
RabbitMQ, with API keys on: the list by type (its index, its pages, with statuses, its
cursor bound to it), the caller's throughput by minute, the system's queue figures, and the
purge of throughput minutes a day old."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import live_app
from test_submit import VALID

from common.api_keys import new_api_key
from common.mysql import MySQLTaskRepository
from common.mysql.repository import _list_statement
from common.mysql.schema import one_connection
from common.settings import Settings
from common.tasks import TaskQuery, TaskStatus
from services.housekeeping import run_throughput_purge
from testkit import fixtures
from testkit.polling import wait_until
from testkit.sql import query

repository = fixtures.repository

ALICE_KEY, ALICE = new_api_key("alice")
BOB_KEY, BOB = new_api_key("bob")
CAROL_KEY, CAROL = new_api_key("carol")  # submits nothing

CHECKSUM = {**VALID, "type": "checksum", "payload": {"size_bytes": 4096}}
HASH_CHAIN = {**VALID, "type": "hash_chain", "payload": {"rounds": 1}}


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {"api_keys": f"{ALICE},{BOB},{CAROL}", "dispatch_interval_seconds": 0.1}


@pytest.fixture(scope="module")
async def api(direct: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with live_app(direct) as client:
        yield client


async def submitted(api: httpx.AsyncClient, key: str, body: dict[str, Any]) -> str:
    answer = await api.post("/api/tasks", json=body, headers=as_(key))
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def every_page(api: httpx.AsyncClient, key: str, params: dict[str, Any]) -> list[list[str]]:
    """The ids of each page, following next_cursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await api.get(
            "/api/tasks",
            params={**params, **({} if cursor is None else {"cursor": cursor})},
            headers=as_(key),
        )
        assert page.status_code == 200, page.text
        pages.append([item["task_id"] for item in page.json()["items"]])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return pages


def assert_400(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [error["field"] for error in answer.json()["errors"]] == [field], answer.json()


# --- the list by type ------------------------------------------------------------------


@pytest.mark.integration
async def test_the_list_pages_through_one_type_alone_and_with_statuses(
    api: httpx.AsyncClient,
) -> None:
    checksums = [await submitted(api, ALICE_KEY, CHECKSUM) for _ in range(5)]
    chains = [await submitted(api, ALICE_KEY, HASH_CHAIN) for _ in range(2)]
    await submitted(api, ALICE_KEY, VALID)  # simulated
    bobs = await submitted(api, BOB_KEY, CHECKSUM)
    for task_id in checksums[1:3]:
        assert (await api.post(f"/api/tasks/{task_id}/cancel", headers=as_(ALICE_KEY))).is_success

    pages = await every_page(api, ALICE_KEY, {"type": "checksum", "limit": 2})
    assert pages == [checksums[:2:-1], checksums[2:0:-1], checksums[:1]]  # newest first
    assert bobs not in itertools.chain(*pages)
    assert await every_page(api, ALICE_KEY, {"type": "hash_chain"}) == [chains[::-1]]
    cancelled = {"type": "checksum", "status": "CANCELLED", "limit": 1}
    assert await every_page(api, ALICE_KEY, cancelled) == [[checksums[2]], [checksums[1]]]
    several = {"type": "checksum", "status": ["PENDING", "CANCELLED"], "limit": 3}
    assert list(itertools.chain(*await every_page(api, ALICE_KEY, several))) == checksums[::-1]
    pending = {"type": "checksum", "status": "PENDING"}
    assert await every_page(api, ALICE_KEY, pending) == [[checksums[4], checksums[3], checksums[0]]]
    assert await every_page(api, BOB_KEY, {"type": "checksum"}) == [[bobs]]
    assert await every_page(api, BOB_KEY, {"type": "hash_chain"}) == [[]]


@pytest.mark.integration
async def test_a_cursor_holds_only_for_its_own_type(api: httpx.AsyncClient) -> None:
    for _ in range(2):
        await submitted(api, ALICE_KEY, HASH_CHAIN)
    typed = await api.get(
        "/api/tasks", params={"type": "hash_chain", "limit": 1}, headers=as_(ALICE_KEY)
    )
    untyped = await api.get("/api/tasks", params={"limit": 1}, headers=as_(ALICE_KEY))
    typed_cursor, untyped_cursor = typed.json()["next_cursor"], untyped.json()["next_cursor"]
    assert typed_cursor
    assert untyped_cursor
    for params in (
        {"cursor": typed_cursor},
        {"cursor": typed_cursor, "type": "checksum"},
        {"cursor": untyped_cursor, "type": "hash_chain"},
    ):
        assert_400(await api.get("/api/tasks", params=params, headers=as_(ALICE_KEY)), "cursor")
    again = {"cursor": typed_cursor, "type": "hash_chain", "limit": 1}
    assert (await api.get("/api/tasks", params=again, headers=as_(ALICE_KEY))).status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize("value", ["nope", "", "CHECKSUM", "checksum ", "x" * 300])
async def test_an_unknown_or_malformed_type_is_a_400_naming_it(
    api: httpx.AsyncClient, value: str
) -> None:
    answer = await api.get("/api/tasks", params={"type": value}, headers=as_(ALICE_KEY))
    assert_400(answer, "type")
    assert "GET /api/task-types" in answer.json()["detail"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "statuses", [[], [TaskStatus.FAILED], [TaskStatus.PENDING, TaskStatus.CANCELLED]]
)
async def test_a_type_page_is_one_range_of_the_type_index(
    api: httpx.AsyncClient,
    repository: MySQLTaskRepository,
    direct: Settings,
    statuses: list[TaskStatus],
) -> None:
    # Enough rows that a scan of another index would look cheap if this one were not usable.
    for _ in range(60):
        await submitted(api, BOB_KEY, VALID)
    page_query = TaskQuery(
        statuses=frozenset(statuses),
        type="checksum",
        tenant="alice",
        after=(datetime.now(UTC), "ffffffff-ffff-4fff-8fff-ffffffffffff"),
    )
    sql, args = _list_statement(page_query, sorted(statuses))
    async with one_connection(direct.database) as cursor:
        await cursor.execute(f"EXPLAIN {sql}", args)
        names = [column[0].lower() for column in cursor.description]
        [plan] = [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
    assert plan["key"] == "idx_tasks_tenant_type_created", plan
    assert plan["type"] in ("ref", "range"), plan
    assert "filesort" not in (plan["extra"] or "").lower(), plan
    assert int(plan["rows"]) <= 20, plan  # alice's checksum rows, not bob's 60 others
    page, _ = await repository.list_tasks(page_query)
    assert {(r.type, r.tenant) for r in page} <= {("checksum", "alice")}


# --- throughput --------------------------------------------------------------------------


async def window(api: httpx.AsyncClient, key: str, **params: Any) -> list[dict[str, Any]]:
    answer = await api.get("/api/tasks/throughput", params=params, headers=as_(key))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert list(answer.json()) == ["minutes"]
    minutes: list[dict[str, Any]] = answer.json()["minutes"]
    return minutes


def sums(minutes: list[dict[str, Any]]) -> tuple[int, int]:
    return sum(m["submitted"] for m in minutes), sum(m["completed"] for m in minutes)


@pytest.mark.integration
async def test_a_tenant_without_tasks_gets_every_minute_at_zero(api: httpx.AsyncClient) -> None:
    before = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = await window(api, CAROL_KEY)
    after = datetime.now(UTC).replace(second=0, microsecond=0)
    assert len(minutes) == 60
    assert all(set(m) == {"minute", "submitted", "completed"} for m in minutes)
    assert all((m["submitted"], m["completed"]) == (0, 0) for m in minutes)
    assert all(m["minute"].endswith(":00+00:00") for m in minutes)
    starts = [datetime.fromisoformat(m["minute"]) for m in minutes]
    assert [b - a for a, b in itertools.pairwise(starts)] == [timedelta(minutes=1)] * 59
    assert before <= starts[-1] <= after  # the current minute last


@pytest.mark.integration
async def test_submissions_and_completions_are_the_callers_own(
    api: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    alice_before, bob_before = (
        sums(await window(api, ALICE_KEY, minutes=3)),
        sums(await window(api, BOB_KEY, minutes=3)),
    )
    ids = [await submitted(api, ALICE_KEY, VALID) for _ in range(4)]
    for task_id in ids:
        await repository.claim(task_id, lease_seconds=60, steal=False)
    assert await repository.complete(ids[0])
    assert await repository.complete(ids[1], '{"ok": true}')
    assert await repository.fail(ids[2], "boom")  # ended, not completed
    assert (await api.post(f"/api/tasks/{ids[3]}/cancel", headers=as_(ALICE_KEY))).is_success
    alice_after = sums(await window(api, ALICE_KEY, minutes=3))
    assert (alice_after[0] - alice_before[0], alice_after[1] - alice_before[1]) == (4, 2)
    assert sums(await window(api, BOB_KEY, minutes=3)) == bob_before
    assert sums(await window(api, CAROL_KEY)) == (0, 0)


@pytest.mark.integration
async def test_minutes_is_one_to_1440(api: httpx.AsyncClient) -> None:
    assert len(await window(api, CAROL_KEY, minutes=1)) == 1
    assert len(await window(api, CAROL_KEY, minutes=1440)) == 1440
    for value in ("0", "1441", "-5", "ten", "1.5", "", "99999999999999999999"):
        answer = await api.get(
            "/api/tasks/throughput", params={"minutes": value}, headers=as_(CAROL_KEY)
        )
        assert_400(answer, "minutes")


@pytest.mark.integration
async def test_throughput_is_not_a_task_id_and_needs_a_key(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/tasks/throughput")).status_code == 401
    assert (await api.get("/api/queue")).status_code == 401


# --- the queue ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_the_queue_shows_the_latest_measure_to_every_tenant(
    api: httpx.AsyncClient,
) -> None:
    async def measured() -> dict[str, Any] | None:
        answer = await api.get("/api/queue", headers=as_(CAROL_KEY))
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["queue_ready"] is not None else None

    figures = await wait_until(measured, timeout=10, what="a measure of the queue")
    assert list(figures) == ["outbox_backlog", "queue_ready", "measured_at"]
    assert isinstance(figures["outbox_backlog"], int)
    assert figures["outbox_backlog"] >= 0
    assert figures["queue_ready"] >= 0  # the tasks above wait there: no worker runs
    measured_at = datetime.fromisoformat(figures["measured_at"])
    assert figures["measured_at"].endswith("+00:00")
    assert timedelta(0) <= datetime.now(UTC) - measured_at < timedelta(seconds=10)
    # System-wide: a tenant with tasks sees the same kind of figures, not its own.
    other = (await api.get("/api/queue", headers=as_(ALICE_KEY))).json()
    assert set(other) == set(figures)


# --- the purge ---------------------------------------------------------------------------


@pytest.mark.integration
async def test_the_housekeeping_loop_purges_minutes_a_day_old(
    repository: MySQLTaskRepository, direct: Settings
) -> None:
    for shard in range(5):
        await query(
            direct.database,
            "INSERT INTO task_throughput (tenant, minute, shard, submitted) VALUES ('old',"
            " UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND - INTERVAL 1500 MINUTE,"
            " %s, 1), ('old', UTC_TIMESTAMP() - INTERVAL SECOND(UTC_TIMESTAMP()) SECOND, %s, 1)",
            shard,
            shard,
        )

    async def purged() -> bool:
        [(left,)] = await query(
            direct.database,
            "SELECT COUNT(*) FROM task_throughput WHERE tenant = 'old'"
            " AND minute < UTC_TIMESTAMP() - INTERVAL 1 DAY",
        )
        return int(left) == 0

    loop = asyncio.create_task(
        run_throughput_purge(repository=repository, interval_seconds=0.05, batch_size=2)
    )
    try:
        await wait_until(purged, timeout=10, what="the old minutes gone")
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    [(kept,)] = await query(
        direct.database, "SELECT COUNT(*) FROM task_throughput WHERE tenant = 'old'"
    )
    assert kept == 5  # this minute's rows stay
