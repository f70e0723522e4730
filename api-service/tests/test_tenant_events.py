"""GET /api/events, one stream of every transition of the caller's tenant: how it settles
the order of events across tasks (units, on the fakes), then the app under uvicorn with its
real lifespan against the real MySQL/MariaDB and RabbitMQ: only the tenant's events, in id
order, from now or after a Last-Event-ID, a burst complete, a transition whose broadcast
never came, one still committing, and the slots it shares with the per-task streams."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from test_submit import VALID

from common.api_keys import new_api_key
from common.mysql import Database, MySQLTaskRepository
from common.settings import Settings
from common.tasks import EventKind, EventRow, NewTask, TaskEvent, TaskStatus
from main import create_app
from services.events import EventHub, settled_events, tenant_event_stream
from testkit import fixtures
from testkit.fakes import InMemoryTaskRepository
from testkit.polling import wait_until
from testkit.serving import served

repository = fixtures.repository

ALICE_KEY, ALICE = new_api_key("alice")
BOB_KEY, BOB = new_api_key("bob")
MAX_STREAMS = 3
DEADLINE = 30.0


def as_(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- units: the order across tasks --------------------------------------------------------


def row(event_id: int, age: float, mine: bool = True) -> EventRow:
    event = TaskEvent(
        event_id, "t", EventKind.CREATED, TaskStatus.PENDING, 0, None, datetime.now(UTC)
    )
    return EventRow(event_id, age, event if mine else None)


@pytest.mark.unit
def test_other_tenants_rows_fill_the_sequence_without_being_sent() -> None:
    events, last, hold = settled_events(
        [row(11, 0.0), row(12, 0.0, mine=False), row(13, 0.0)], 10, grace_seconds=1.0
    )
    assert [e.event_id for e in events] == [11, 13]
    assert (last, hold) == (13, None)


@pytest.mark.unit
def test_a_young_hole_holds_back_what_follows_it_until_its_grace_ends() -> None:
    events, last, hold = settled_events([row(11, 0.0), row(13, 0.25)], 10, grace_seconds=1.0)
    assert [e.event_id for e in events] == [11]
    assert last == 11
    assert hold == pytest.approx(0.75)


@pytest.mark.unit
def test_a_hole_older_than_its_grace_is_an_id_no_event_will_have() -> None:
    events, last, hold = settled_events([row(14, 5.0), row(15, 0.0)], 10, grace_seconds=1.0)
    assert [e.event_id for e in events] == [14, 15]
    assert (last, hold) == (15, None)


@pytest.mark.unit
async def test_the_tenant_stream_starts_from_now_and_ends_when_the_hub_closes() -> None:
    fake = InMemoryTaskRepository()
    await fake.create(NewTask(str(uuid.uuid4()), "t", "d", None, tenant="alice"))
    hub = EventHub()
    stream = tenant_event_stream(
        repository=fake, hub=hub, tenant="alice", last_event_id=None, heartbeat_seconds=60
    )
    assert (await anext(stream)).startswith(b"retry:")
    assert hub.open_streams == 1
    later = await fake.create(NewTask(str(uuid.uuid4()), "t", "d", None, tenant="alice"))
    await fake.create(NewTask(str(uuid.uuid4()), "t", "d", None, tenant="bob"))
    hub.changed([later.task_id])
    chunk = await anext(stream)
    assert chunk.count(b"data: ") == 1  # the task created before it opened is not in it
    assert later.task_id.encode() in chunk
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert hub.open_streams == 0


@pytest.mark.unit
async def test_every_broadcast_and_wake_all_wake_a_tenant_stream() -> None:
    hub = EventHub()
    with hub.watching_all() as woken:
        hub.changed(["any task"])
        assert woken.is_set()
        woken.clear()
        hub.wake_all()
        assert woken.is_set()
    assert hub.open_streams == 0


# --- the endpoint on the real services ----------------------------------------------------


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_keys": f"{ALICE},{BOB}",
        "max_streams_per_tenant": MAX_STREAMS,
        "events_heartbeat_seconds": 0.5,
    }


@pytest.fixture(scope="module")
async def base_url(direct: Settings) -> AsyncIterator[str]:
    async with served(create_app(direct)) as url:
        yield url


@pytest.fixture
async def api(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=DEADLINE) as client:
        yield client


class Following:
    """An open event stream, read frame by frame: the events' data, in the order sent."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.events: list[dict[str, Any]] = []

    async def _frame(self) -> dict[str, str]:
        frame: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if frame:
                    return frame
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                frame[name] = value.removeprefix(" ")
        raise AssertionError("the stream ended")

    async def opened(self) -> None:
        """Its first frame, the retry line: from then on its start is fixed."""
        assert "retry" in await self._frame()

    async def count(self, n: int) -> list[dict[str, Any]]:
        """The events once there are `n` of them (within DEADLINE)."""
        async with asyncio.timeout(DEADLINE):
            while len(self.events) < n:
                frame = await self._frame()
                data = orjson.loads(frame["data"])
                assert frame["id"] == str(data["event_id"])
                self.events.append(data)
        return self.events


@contextlib.asynccontextmanager
async def following(api: httpx.AsyncClient, key: str, **headers: str) -> AsyncIterator[Following]:
    async with api.stream("GET", "/api/events", headers={**as_(key), **headers}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Following(response)
        await stream.opened()
        yield stream


async def submitted(api: httpx.AsyncClient, key: str) -> str:
    answer = await api.post("/api/tasks", json=VALID, headers=as_(key))
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def cancelled(api: httpx.AsyncClient, key: str, task_id: str) -> None:
    answer = await api.post(f"/api/tasks/{task_id}/cancel", headers=as_(key))
    assert answer.status_code == 200, answer.text


async def stored_ids(
    repository: MySQLTaskRepository, task_ids: list[str], after: int = 0
) -> list[int]:
    """The ids of those tasks' events after `after`, from the table, in id order."""
    ids = [
        e.event_id for t in task_ids for e in await repository.events_after(t, after, limit=1000)
    ]
    return sorted(ids)


def ids_of(events: list[dict[str, Any]]) -> list[int]:
    return [event["event_id"] for event in events]


@pytest.mark.integration
async def test_the_tenants_events_of_several_tasks_arrive_in_id_order_and_no_one_elses(
    api: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    async with following(api, ALICE_KEY) as stream:
        alices, bobs = [], []
        for _ in range(3):
            alices.append(await submitted(api, ALICE_KEY))
            bobs.append(await submitted(api, BOB_KEY))
        await cancelled(api, ALICE_KEY, alices[0])
        await cancelled(api, BOB_KEY, bobs[1])
        events = await stream.count(4)
    assert ids_of(events) == await stored_ids(repository, alices)
    assert [(e["task_id"], e["kind"]) for e in events] == [
        *((task_id, "created") for task_id in alices),
        (alices[0], "cancelled"),
    ]
    assert not {e["task_id"] for e in events} & set(bobs)


@pytest.mark.integration
async def test_without_last_event_id_it_starts_from_now(api: httpx.AsyncClient) -> None:
    before = await submitted(api, ALICE_KEY)
    async with following(api, ALICE_KEY) as stream:
        after = await submitted(api, ALICE_KEY)
        await cancelled(api, ALICE_KEY, before)
        events = await stream.count(2)
    assert [(e["task_id"], e["kind"]) for e in events] == [
        (after, "created"),
        (before, "cancelled"),
    ]


@pytest.mark.integration
async def test_a_reconnect_with_last_event_id_skips_and_repeats_nothing(
    api: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    async with following(api, ALICE_KEY) as stream:
        alices = [await submitted(api, ALICE_KEY) for _ in range(3)]
        first = (await stream.count(2))[:2]
    # Closed after two: the third and the rest happen while no stream is open.
    await cancelled(api, ALICE_KEY, alices[0])
    await submitted(api, BOB_KEY)
    alices.append(await submitted(api, ALICE_KEY))
    expected = await stored_ids(repository, alices)
    resume = {"Last-Event-ID": str(first[-1]["event_id"])}
    async with following(api, ALICE_KEY, **resume) as stream:
        rest = await stream.count(len(expected) - len(first))
    assert ids_of(first) + ids_of(rest) == expected


@pytest.mark.integration
async def test_a_burst_of_transitions_arrives_complete(
    api: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    async with following(api, ALICE_KEY) as stream:
        alices = await asyncio.gather(*(submitted(api, ALICE_KEY) for _ in range(120)))
        bobs = await asyncio.gather(*(submitted(api, BOB_KEY) for _ in range(40)))
        await asyncio.gather(*(cancelled(api, ALICE_KEY, t) for t in alices))
        await asyncio.gather(*(cancelled(api, BOB_KEY, t) for t in bobs))
        events = await stream.count(2 * len(alices))
    assert ids_of(events) == await stored_ids(repository, list(alices))
    assert {e["task_id"] for e in events} == set(alices)


@pytest.mark.integration
async def test_a_transition_whose_broadcast_never_came_still_arrives(
    api: httpx.AsyncClient, repository: MySQLTaskRepository
) -> None:
    task_id = await submitted(api, ALICE_KEY)
    async with following(api, ALICE_KEY) as stream:
        # Straight to the table: nothing is broadcast; the stream reads again on its own.
        assert await repository.cancel(task_id) is not None
        events = await stream.count(1)
    assert [(e["task_id"], e["kind"]) for e in events] == [(task_id, "cancelled")]


@pytest.mark.integration
async def test_a_transition_still_committing_holds_back_the_later_ones(
    api: httpx.AsyncClient, direct: Settings
) -> None:
    slow, quick = await submitted(api, ALICE_KEY), await submitted(api, ALICE_KEY)
    database = Database(direct)
    await database.start()
    try:
        async with following(api, ALICE_KEY) as stream:
            async with database.transaction() as transaction:
                # Takes its id now, commits after the cancel below has committed.
                await transaction.execute(
                    "INSERT INTO task_events (task_id, kind, status, attempts)"
                    " VALUES (%s, 'progress', 'PENDING', 0)",
                    [slow],
                )
                await cancelled(api, ALICE_KEY, quick)
                reading = asyncio.create_task(stream.count(2))
                # Well within the hole's grace (a second): the cancel waits behind it.
                done, _ = await asyncio.wait({reading}, timeout=0.2)
                assert not done
                assert not stream.events
            events = await reading
    finally:
        await database.close()
    assert [(e["task_id"], e["kind"]) for e in events] == [(slow, "progress"), (quick, "cancelled")]


@pytest.mark.integration
async def test_both_kinds_of_stream_share_the_tenants_slots_and_give_them_back(
    api: httpx.AsyncClient,
) -> None:
    task_id = await submitted(api, ALICE_KEY)
    per_task = f"/api/tasks/{task_id}/events"
    reading: list[AsyncIterator[bytes]] = []
    async with contextlib.AsyncExitStack() as streams:
        for path in (per_task, per_task, "/api/events")[:MAX_STREAMS]:
            answer = await streams.enter_async_context(
                api.stream("GET", path, headers=as_(ALICE_KEY))
            )
            assert answer.status_code == 200
            # The first bytes: the stream is open (its iterator kept, or it is closed).
            reading.append(answer.aiter_bytes())
            await anext(reading[-1])
        for path in ("/api/events", per_task):
            refused = await api.get(path, headers=as_(ALICE_KEY))
            assert refused.status_code == 429
            assert refused.json()["type"] == "/problems/too-many-streams"
            assert "retry-after" in refused.headers
        async with following(api, BOB_KEY):  # Bob's slots are his own
            pass
    # Closed by their client, the streams give their slots back.

    async def slots_free() -> bool:
        async with contextlib.AsyncExitStack() as again:
            answers = [
                await again.enter_async_context(
                    api.stream("GET", "/api/events", headers=as_(ALICE_KEY))
                )
                for _ in range(MAX_STREAMS)
            ]
            return all(answer.status_code == 200 for answer in answers)

    await wait_until(slots_free, timeout=10, interval=0.05, what="the slots given back")
