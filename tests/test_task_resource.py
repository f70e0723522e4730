"""The task as a resource, over real HTTP: both services as real processes (uvicorn on
uvloop, the worker's consume loop) on the real MySQL/MariaDB and RabbitMQ. Listing and
counting, cancelling a PENDING and a running task, idempotent submission, and the live event
stream with a reconnect in the middle."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from test_end_to_end import Stack, processes, stack, status_of

from common.messages import TaskMessage
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask, TaskStatus
from testkit import fixtures
from testkit.broker import publish_task
from testkit.polling import wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

__all__ = ["processes", "stack"]  # the stack of test_end_to_end, with this module's settings
repository = fixtures.repository

TASK = {"title": "Resize images", "description": "thumbnails", "metadata": {"album": 7}}
WORK_SECONDS = (2.0, 3.0)


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": WORK_SECONDS[0],
        "processing_delay_max_seconds": WORK_SECONDS[1],
        "log_format": "json",
        "events_heartbeat_seconds": 0.5,
        # Rows the tests write themselves stay unpublished unless a test publishes them.
        "dispatch_min_age_seconds": 600,
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert [error["field"] for error in body["errors"]] == [field], body


async def submit(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await client.post("/api/tasks", json=TASK, headers=headers)


def logged(stack: Stack, event: str, task_id: str) -> bool:
    for line in (stack.logs / "worker.log").read_text().splitlines():
        if task_id in line and json.loads(line).get("event") == event:
            return True
    return False


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The stream's events as {"id", "data"} and its comments as {"comment"}."""
    frame: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                yield frame
            frame = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            frame[name] = json.loads(value) if name == "data" else value


# --- the resource ----------------------------------------------------------------------


async def test_submit_says_when_to_poll_and_the_task_links_its_events(stack: Stack) -> None:
    response = await submit(stack.client)
    assert response.status_code == 202
    assert response.headers["retry-after"] == "1"
    task_id = response.json()["task_id"]
    body = await status_of(stack.client, task_id)
    assert body["events_url"] == f"/api/tasks/{task_id}/events"
    assert body["attempts"] in (0, 1)

    async def started() -> dict[str, Any] | None:
        task = await status_of(stack.client, task_id)
        return task if task["started_at"] is not None else None

    task = await wait_until(started, timeout=10, what="started_at")
    assert task["started_at"] >= task["created_at"]


async def test_the_list_pages_through_a_cursor_newest_first(stack: Stack) -> None:
    since = (datetime.now(UTC) - timedelta(milliseconds=1)).isoformat()
    ids = [(await submit(stack.client)).json()["task_id"] for _ in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"created_after": since, "limit": 2}
    pages = 0
    while True:
        response = await stack.client.get("/api/tasks", params=params)
        assert response.status_code == 200
        page = response.json()
        seen += [item["task_id"] for item in page["items"]]
        pages += 1
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    assert seen == ids[::-1]
    assert pages == 3
    first = (await stack.client.get("/api/tasks", params={"limit": 1})).json()["items"][0]
    assert first.keys() == (await status_of(stack.client, first["task_id"])).keys()


async def test_the_list_filters_by_several_statuses(
    stack: Stack, repository: MySQLTaskRepository
) -> None:
    since = datetime.now(UTC) - timedelta(milliseconds=1)
    pending = [NewTask(str(uuid.uuid4()), f"p{n}", "d", None) for n in range(3)]
    await repository.create_many(pending)
    await repository.cancel(pending[0].task_id)
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("created_after", since.isoformat()),
        ("status", "CANCELLED"),
        ("status", "PENDING"),
    ]
    items = (await stack.client.get("/api/tasks", params=params)).json()["items"]
    assert sorted(i["task_id"] for i in items) == sorted(t.task_id for t in pending)
    only = (await stack.client.get("/api/tasks", params=params[:2])).json()["items"]
    assert [i["task_id"] for i in only] == [pending[0].task_id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "DONE"}, "status"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "2026-12-01T10:00:00"}, "created_after"),  # no offset
        ({"created_before": "1764583200"}, "created_before"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_bad_list_parameters_are_400_problems(
    stack: Stack, params: dict[str, str], field: str
) -> None:
    assert_problem(await stack.client.get("/api/tasks", params=params), 400, field)


async def test_a_tampered_cursor_or_one_from_other_filters_is_400(stack: Stack) -> None:
    for _ in range(3):
        await submit(stack.client)
    cursor = (await stack.client.get("/api/tasks", params={"limit": 1})).json()["next_cursor"]
    assert cursor
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for params in (
        {"cursor": flipped},
        {"cursor": cursor, "status": "PENDING"},
        {"cursor": cursor[:-5]},
    ):
        assert_problem(await stack.client.get("/api/tasks", params=params), 400, "cursor")


async def test_stats_count_every_status(stack: Stack) -> None:
    before = (await stack.client.get("/api/tasks/stats")).json()
    assert set(before["counts"]) == {s.value for s in TaskStatus}
    assert before["total"] == sum(before["counts"].values())
    await submit(stack.client)
    after = (await stack.client.get("/api/tasks/stats")).json()
    assert after["total"] == before["total"] + 1


# --- cancel ----------------------------------------------------------------------------


async def test_a_cancelled_pending_task_never_runs(
    stack: Stack, repository: MySQLTaskRepository, channel: AbstractChannel, direct: Settings
) -> None:
    task = NewTask(str(uuid.uuid4()), "never", "d", None)
    await repository.create(task)  # stored, not yet published: it stays PENDING

    response = await stack.client.post(f"/api/tasks/{task.task_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    # Its message arrives afterwards anyway (as the outbox would send it): no work is done.
    await publish_task(channel, direct, TaskMessage(task.task_id, "never", "d", None))
    await wait_until(
        lambda: asyncio.to_thread(logged, stack, "task skipped", task.task_id),
        timeout=10,
        what="the worker to skip the cancelled task",
    )
    body = await status_of(stack.client, task.task_id)
    assert (body["status"], body["started_at"], body["attempts"]) == ("CANCELLED", None, 0)


async def test_a_running_task_is_stopped_within_a_second(stack: Stack) -> None:
    task_id = (await submit(stack.client)).json()["task_id"]

    async def processing() -> bool:
        return bool((await status_of(stack.client, task_id))["status"] == "PROCESSING")

    await wait_until(processing, timeout=10, what="PROCESSING")
    response = await stack.client.post(f"/api/tasks/{task_id}/cancel")
    cancelled_at = time.monotonic()
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    await wait_until(
        lambda: asyncio.to_thread(logged, stack, "task cancelled", task_id),
        timeout=1.0,
        interval=0.02,
        what="the worker to stop the task's work",
    )
    assert time.monotonic() - cancelled_at <= 1.0
    # Past the time its work would have taken: still CANCELLED, never completed.
    deadline = time.monotonic() + WORK_SECONDS[1] + 1
    while time.monotonic() < deadline:
        assert (await status_of(stack.client, task_id))["status"] == "CANCELLED"
        await asyncio.sleep(0.2)
    assert not logged(stack, "task completed", task_id)


async def test_cancelling_a_final_or_unknown_task(stack: Stack) -> None:
    task_id = (await submit(stack.client)).json()["task_id"]
    assert (await stack.client.post(f"/api/tasks/{task_id}/cancel")).status_code == 200
    again = await stack.client.post(f"/api/tasks/{task_id}/cancel")
    assert_problem(again, 409)
    assert again.json()["task_status"] == "CANCELLED"
    assert_problem(await stack.client.post(f"/api/tasks/{uuid.uuid4()}/cancel"), 404)
    assert_problem(await stack.client.post("/api/tasks/not-an-id/cancel"), 404)


# --- idempotency -----------------------------------------------------------------------


async def test_the_same_key_and_body_replays_the_first_answer(stack: Stack) -> None:
    name = f"order-{uuid.uuid4()}"
    first = await submit(stack.client, **{"Idempotency-Key": f'"{name}"'})
    second = await submit(stack.client, **{"Idempotency-Key": name})  # unquoted: the same key
    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert second.headers["location"] == first.headers["location"]

    other = await stack.client.post(
        "/api/tasks", json={**TASK, "title": "other"}, headers={"Idempotency-Key": name}
    )
    assert_problem(other, 422)


async def test_concurrent_requests_with_one_key_make_one_task(stack: Stack) -> None:
    name = f"burst-{uuid.uuid4()}"
    responses = await asyncio.gather(
        *(submit(stack.client, **{"Idempotency-Key": name}) for _ in range(20))
    )
    assert {r.status_code for r in responses} <= {202, 409}
    ids = {r.json()["task_id"] for r in responses if r.status_code == 202}
    assert len(ids) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1


@pytest.mark.parametrize(
    "value", ["", "has space", '"unterminated', "x" * 256, "tab\tin", "ü", '"a"b"']
)
async def test_a_malformed_key_is_a_400(stack: Stack, value: str) -> None:
    response = await stack.client.post(
        "/api/tasks", json=TASK, headers=[(b"Idempotency-Key", value.encode("utf-8"))]
    )
    assert_problem(response, 400, "Idempotency-Key")


# --- live events -----------------------------------------------------------------------


async def test_the_stream_follows_a_task_to_its_end(stack: Stack) -> None:
    task_id = (await submit(stack.client)).json()["task_id"]
    received: list[dict[str, Any]] = []
    async with stack.client.stream("GET", f"/api/tasks/{task_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for frame in sse_events(response):
            if "data" in frame:
                received.append(frame)
    # It ended by itself after COMPLETED.
    statuses = [frame["data"]["status"] for frame in received]
    assert statuses[-1] == "COMPLETED"
    assert statuses[0] in ("PENDING", "PROCESSING")
    ids = [int(frame["id"]) for frame in received]
    assert ids == sorted(set(ids))
    assert all(frame["data"]["event_id"] == int(frame["id"]) for frame in received)
    assert {"task_id", "status", "attempts", "updated_at"} <= received[-1]["data"].keys()


async def test_a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing(
    stack: Stack, repository: MySQLTaskRepository
) -> None:
    task_id = (await submit(stack.client)).json()["task_id"]
    async with stack.client.stream("GET", f"/api/tasks/{task_id}/events") as response:
        async for frame in sse_events(response):
            if "data" in frame:
                first = frame
                break  # the client goes away mid-stream
    # While it is away the task moves on.
    await wait_until(
        lambda: _status_is(stack.client, task_id, "COMPLETED"), timeout=15, what="COMPLETED"
    )
    resumed: list[int] = []
    headers = {"Last-Event-ID": first["id"]}
    async with stack.client.stream(
        "GET", f"/api/tasks/{task_id}/events", headers=headers
    ) as response:
        async for frame in sse_events(response):
            if "data" in frame:
                resumed.append(int(frame["id"]))
    stored = [e.event_id for e in await repository.events_after(task_id, 0, limit=100)]
    assert [int(first["id"]), *resumed] == stored[stored.index(int(first["id"])) :]
    assert resumed  # started and completed came after the first event


async def _status_is(client: httpx.AsyncClient, task_id: str, status: str) -> bool:
    return bool((await status_of(client, task_id))["status"] == status)


@pytest.fixture(scope="module")
async def replica(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    """A second API process on the same database and vhost: another replica, or the first
    one after a restart (nothing of it lives in the process)."""
    other = settings.model_copy(update={"api_port": free_port()})
    log = tmp_path_factory.mktemp("replica") / "api.log"
    with service_process("api-service", service_environment(other), log):
        async with api_client(f"http://127.0.0.1:{other.api_port}") as client:

            async def healthy() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, timeout=30, what="the replica's /health")
            yield client


async def test_a_key_replays_on_another_replica_or_after_a_restart(
    stack: Stack, replica: httpx.AsyncClient
) -> None:
    name = f"restart-{uuid.uuid4()}"
    first = await submit(stack.client, **{"Idempotency-Key": name})
    again = await replica.post("/api/tasks", json=TASK, headers={"Idempotency-Key": name})
    assert again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["idempotent-replayed"] == "true"


async def test_an_idle_stream_sends_heartbeats_and_a_cancel_on_another_replica_ends_it(
    stack: Stack, repository: MySQLTaskRepository, replica: httpx.AsyncClient
) -> None:
    task = NewTask(str(uuid.uuid4()), "waits", "d", None)
    await repository.create(task)  # stays PENDING: nothing happens to it
    frames: list[dict[str, Any]] = []

    async def follow() -> None:
        async with stack.client.stream("GET", f"/api/tasks/{task.task_id}/events") as response:
            async for frame in sse_events(response):
                frames.append(frame)

    following = asyncio.create_task(follow())
    await wait_until(
        lambda: _async_true(sum("comment" in f for f in frames) >= 2),
        timeout=5,
        what="two heartbeats",
    )
    # Cancelled through the other API: the broadcast reaches this one's stream.
    assert (await replica.post(f"/api/tasks/{task.task_id}/cancel")).status_code == 200
    await asyncio.wait_for(following, timeout=5)
    events = [f["data"] for f in frames if "data" in f]
    assert [e["kind"] for e in events] == ["created", "cancelled"]


async def _async_true(value: bool) -> bool:
    return value


async def test_unknown_task_or_bad_last_event_id_is_a_problem_before_the_stream(
    stack: Stack,
) -> None:
    assert_problem(await stack.client.get(f"/api/tasks/{uuid.uuid4()}/events"), 404)
    task_id = (await submit(stack.client)).json()["task_id"]
    response = await stack.client.get(
        f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": "abc"}
    )
    assert_problem(response, 400, "Last-Event-ID")
