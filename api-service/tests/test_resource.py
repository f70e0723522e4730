"""The task resource's own rules, with the fakes at the ports: cursors, Idempotency-Key
values, the cancel broadcast, and the event stream's framing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from common.settings import Settings
from common.tasks import NewTask
from main import create_app
from services.backends import Backends
from services.cursors import InvalidCursor, decode_cursor, encode_cursor
from services.idempotency import InvalidIdempotencyKey, fingerprint, parse_idempotency_key
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.polling import wait_until

pytestmark = pytest.mark.unit

TASK = {"title": "t", "description": "d"}


def test_a_cursor_round_trips_and_is_bound_to_its_filters() -> None:
    created_at = datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    task_id = str(uuid.uuid4())
    cursor = encode_cursor(created_at, task_id, scope=b"all")
    assert decode_cursor(cursor, scope=b"all") == (created_at, task_id)
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, scope=b"only PENDING")
    for broken in ("", "x", cursor[:-1], cursor + "A", "!" * len(cursor), cursor.upper()):
        with pytest.raises(InvalidCursor):
            decode_cursor(broken, scope=b"all")


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("abc", "abc"),
        ('"abc"', "abc"),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ("x" * 255, "x" * 255),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    ],
)
def test_idempotency_keys_quoted_or_not(value: str, key: str) -> None:
    assert parse_idempotency_key(value) == key


@pytest.mark.parametrize(
    "value", ["", '""', "a b", '"a b"', '"abc', 'a"b', "a\\b", "x" * 256, "ü", "\t"]
)
def test_malformed_idempotency_keys(value: str) -> None:
    with pytest.raises(InvalidIdempotencyKey):
        parse_idempotency_key(value)


def test_the_fingerprint_ignores_key_order_only() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"b": [1, 2]}) != fingerprint({"b": [2, 1]})


@pytest.fixture
def broadcast() -> list[str]:
    return []


@pytest.fixture
def app(
    settings: Settings,
    repository: InMemoryTaskRepository,
    publisher: RecordingPublisher,
    broadcast: list[str],
) -> FastAPI:
    backends = Backends(
        repository=repository, publisher=publisher, broadcast_cancel=broadcast.extend
    )
    return create_app(settings, backends)


async def test_only_a_running_task_is_broadcast_to_the_workers(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, broadcast: list[str]
) -> None:
    pending, running = str(uuid.uuid4()), str(uuid.uuid4())
    await repository.create(NewTask(pending, "t", "d", None))
    await repository.create(NewTask(running, "t", "d", None))
    await repository.claim(running, lease_seconds=60, steal=False)

    assert (await client.post(f"/api/tasks/{pending}/cancel")).status_code == 200
    assert (await client.post(f"/api/tasks/{running}/cancel")).status_code == 200
    assert broadcast == [running]


async def test_the_stream_of_a_final_task_is_its_last_event_then_the_end(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "t", "d", None))
    await repository.cancel(task_id)
    response = await client.get(f"/api/tasks/{task_id}/events")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    frames = response.text.split("\n\n")
    assert frames[0] == "retry: 2000"
    assert frames[1].startswith("id: 2\ndata: {")
    assert '"status":"CANCELLED"' in frames[1]
    assert frames[2:] == [""]
    replay = await client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": "0"})
    assert replay.text.count("data: ") == 2  # created, then cancelled


async def test_a_database_outage_is_a_503_for_the_new_endpoints(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    repository.fail_with_unavailable()
    task_id = uuid.uuid4()
    for method, path in [
        ("GET", "/api/tasks"),
        ("GET", "/api/tasks/stats"),
        ("POST", f"/api/tasks/{task_id}/cancel"),
        ("GET", f"/api/tasks/{task_id}/events"),
    ]:
        response = await client.request(method, path)
        assert response.status_code == 503, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    keyed = await client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "k"})
    assert keyed.status_code == 503


async def test_a_reconnect_after_the_final_event_is_told_to_stop(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "t", "d", None))
    await repository.cancel(task_id)
    last = repository.events[-1].event_id
    response = await client.get(
        f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": str(last)}
    )
    assert response.status_code == 204
    assert response.content == b""
    earlier = await client.get(
        f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": str(last - 1)}
    )
    assert earlier.status_code == 200
    assert earlier.text.count("data: ") == 1


async def test_a_closing_hub_ends_its_streams(
    repository: InMemoryTaskRepository,
) -> None:
    from services.events import EventHub, task_event_stream

    task_id = str(uuid.uuid4())
    await repository.create(NewTask(task_id, "t", "d", None))
    hub = EventHub()
    stream = task_event_stream(
        repository=repository, hub=hub, task_id=task_id, last_event_id=None, heartbeat_seconds=60
    )
    assert (await anext(stream)).startswith(b"retry:")
    assert b'"kind":"created"' in await anext(stream)
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.open_streams == 0


async def test_the_hub_wants_the_broadcasts_only_while_streams_are_open() -> None:
    from services.events import EventHub

    demands: list[bool] = []
    hub = EventHub(demand=demands.append, linger_seconds=0.05)
    with hub.watching("a"), hub.watching("b"):
        assert demands == [True]
    with hub.watching("c"):  # back within the linger: still bound, no new demand
        pass
    assert demands == [True]
    await wait_until(lambda: _async(demands == [True, False]), timeout=5, what="the release")


async def _async(value: bool) -> bool:
    return value
