"""Scheduled tasks at the API, against the fakes: run_at and delay_seconds validated against
the clock and MAX_DELAY_SECONDS, a scheduled task stored at once but not published, a run_at
already reached published at once, and the dispatcher waking for the next due task."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from test_submit import VALID, assert_problem

from common.messages import TaskMessage
from common.settings import Settings, load_settings
from common.tasks import NewTask, TaskRecord, TaskStatus
from main import create_app
from services.backends import Backends
from services.dispatcher import dispatch_pending, run_dispatcher
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.polling import wait_until

pytestmark = pytest.mark.unit

MAX_DELAY = 3600  # this module's MAX_DELAY_SECONDS, far below the default's 30 days


@pytest.fixture
def settings() -> Settings:
    return load_settings(max_body_bytes=100_000, retry_after_seconds=7, max_delay_seconds=MAX_DELAY)


def rfc3339(seconds_from_now: float, offset_hours: int = 0) -> str:
    """Now plus `seconds_from_now`, as RFC 3339 in the offset `offset_hours`."""
    zone = timezone(timedelta(hours=offset_hours))
    return (datetime.now(UTC) + timedelta(seconds=seconds_from_now)).astimezone(zone).isoformat()


async def submit(client: httpx.AsyncClient, **schedule: object) -> str:
    response = await client.post("/api/tasks", json={**VALID, **schedule})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "PENDING"
    task_id: str = response.json()["task_id"]
    return task_id


async def shown(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


# Each bound is crossed by a margin far larger than the time a request takes, so a slow
# machine cannot move a case to the other side of it.
@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (lambda: {"run_at": rfc3339(60), "delay_seconds": 60}, "run_at"),
        (lambda: {"run_at": rfc3339(-61)}, "run_at"),
        (lambda: {"run_at": rfc3339(-86_400, offset_hours=5)}, "run_at"),
        (lambda: {"run_at": rfc3339(MAX_DELAY + 30)}, "run_at"),
        (lambda: {"delay_seconds": MAX_DELAY + 0.5}, "delay_seconds"),
        (lambda: {"delay_seconds": 10**9}, "delay_seconds"),
        (lambda: {"delay_seconds": -1}, "delay_seconds"),
        (lambda: {"delay_seconds": -0.001}, "delay_seconds"),
        (lambda: {"delay_seconds": "soon"}, "delay_seconds"),
        (lambda: {"run_at": "2030-01-01T10:00:00"}, "run_at"),
        (lambda: {"run_at": rfc3339(60)[:-6]}, "run_at"),  # its offset cut off
        (lambda: {"run_at": "2030-01-01"}, "run_at"),
        (lambda: {"run_at": "tomorrow"}, "run_at"),
        (lambda: {"run_at": 1_900_000_000}, "run_at"),
    ],
    ids=[
        "both",
        "61s-past",
        "a-day-past-in-another-offset",
        "past-max-delay",
        "delay-over-max",
        "delay-far-over-max",
        "negative-delay",
        "negative-fraction",
        "delay-not-a-number",
        "run-at-without-offset",
        "run-at-offset-cut-off",
        "run-at-date-only",
        "run-at-not-a-time",
        "run-at-epoch-number",
    ],
)
async def test_a_bad_schedule_is_400_naming_the_field(
    client: httpx.AsyncClient,
    repository: InMemoryTaskRepository,
    publisher: RecordingPublisher,
    schedule: Any,
    field: str,
) -> None:
    response = await client.post("/api/tasks", json={**VALID, **schedule()})

    problem = assert_problem(response, 400)
    assert problem["type"] == "/problems/validation-error"
    assert [error["field"] for error in problem["errors"]] == [field], problem
    assert all(error["message"] for error in problem["errors"])
    assert repository.rows == {}
    assert publisher.published == []


async def test_the_limits_are_named_in_the_messages(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"run_at": rfc3339(-120)}, "60 s in the past"),
        ({"delay_seconds": MAX_DELAY + 1}, f"MAX_DELAY_SECONDS ({MAX_DELAY:,} s)"),
        ({"run_at": rfc3339(MAX_DELAY + 60)}, f"MAX_DELAY_SECONDS ({MAX_DELAY:,} s)"),
        ({"run_at": rfc3339(60), "delay_seconds": 1}, "not both"),
        ({"run_at": "2030-01-01T10:00:00"}, "offset"),
    ]
    for schedule, words in cases:
        problem = assert_problem(await client.post("/api/tasks", json={**VALID, **schedule}), 400)
        [error] = problem["errors"]
        assert words in error["message"], (schedule, error)


@pytest.mark.parametrize(
    "schedule",
    [
        lambda: {"run_at": rfc3339(-50)},
        lambda: {"run_at": rfc3339(-30, offset_hours=-7)},
        lambda: {"run_at": rfc3339(0).replace("+00:00", "Z")},
        lambda: {"delay_seconds": 0},
    ],
    ids=["50s-past", "30s-past-in-another-offset", "now-as-Z", "no-delay"],
)
async def test_a_run_at_already_reached_is_published_at_once(
    client: httpx.AsyncClient,
    repository: InMemoryTaskRepository,
    publisher: RecordingPublisher,
    schedule: Any,
) -> None:
    body = schedule()
    task_id = await submit(client, **body)

    assert [message.task_id for message in publisher.published] == [task_id]
    assert task_id in repository.dispatched
    run_at = repository.rows[task_id].run_at
    assert run_at is not None
    assert run_at.utcoffset() == timedelta(0)  # stored in UTC, whatever offset it came in
    if "run_at" in body:
        assert run_at == datetime.fromisoformat(body["run_at"])
    assert run_at <= datetime.now(UTC)
    task = await shown(client, task_id)
    assert datetime.fromisoformat(task["run_at"]) == run_at


@pytest.mark.parametrize(
    ("schedule", "ahead"),
    [
        (lambda: {"delay_seconds": 600}, 600),
        (lambda: {"delay_seconds": 2.5}, 2.5),
        (lambda: {"delay_seconds": MAX_DELAY}, MAX_DELAY),
        (lambda: {"run_at": rfc3339(900, offset_hours=9)}, 900),
        (lambda: {"run_at": rfc3339(MAX_DELAY - 30)}, MAX_DELAY - 30),
    ],
    ids=["delay-600s", "delay-2.5s", "delay-max", "run-at-in-another-offset", "run-at-near-max"],
)
async def test_a_scheduled_task_is_stored_pending_with_its_run_at_and_not_published(
    client: httpx.AsyncClient,
    repository: InMemoryTaskRepository,
    publisher: RecordingPublisher,
    schedule: Any,
    ahead: float,
) -> None:
    before = datetime.now(UTC)
    task_id = await submit(client, **schedule())
    after = datetime.now(UTC)

    assert publisher.published == []
    assert task_id not in repository.dispatched
    assert "mark_dispatched" not in repository.calls
    task = await shown(client, task_id)
    assert task["status"] == "PENDING"
    assert (task["started_at"], task["attempts"]) == (None, 0)
    assert task["run_at"].endswith("+00:00")
    run_at = datetime.fromisoformat(task["run_at"])
    # Reckoned from the request's own clock: within the time the request took.
    slack = timedelta(seconds=1)
    assert before + timedelta(seconds=ahead) - slack <= run_at <= after + timedelta(seconds=ahead)


async def test_a_task_without_a_schedule_shows_no_run_at(client: httpx.AsyncClient) -> None:
    task_id = await submit(client)
    assert (await shown(client, task_id))["run_at"] is None


async def test_the_pending_list_shows_scheduled_tasks_with_their_run_at(
    client: httpx.AsyncClient,
) -> None:
    later = await submit(client, delay_seconds=1200)
    sooner = await submit(client, run_at=rfc3339(300))
    now = await submit(client)
    cancelled = await submit(client, delay_seconds=600)
    assert (await client.post(f"/api/tasks/{cancelled}/cancel")).status_code == 200

    response = await client.get("/api/tasks", params={"status": "PENDING"})

    assert response.status_code == 200
    items = {item["task_id"]: item for item in response.json()["items"]}
    assert set(items) == {later, sooner, now}
    assert {item["status"] for item in items.values()} == {"PENDING"}
    assert items[now]["run_at"] is None
    for task_id in (later, sooner):
        assert items[task_id]["run_at"] == (await shown(client, task_id))["run_at"]
    sooner_at, later_at = (datetime.fromisoformat(items[t]["run_at"]) for t in (sooner, later))
    assert sooner_at < later_at
    # And the cancelled one under its own status, run_at and all.
    response = await client.get("/api/tasks", params={"status": "CANCELLED"})
    [item] = response.json()["items"]
    assert item["task_id"] == cancelled
    assert item["run_at"] is not None


async def test_cancelling_a_scheduled_task_keeps_the_dispatcher_from_sending_it(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    task_id = await submit(client, delay_seconds=0.2)
    response = await client.post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"
    task = await shown(client, task_id)

    async def due() -> bool:
        return datetime.now(UTC) > datetime.fromisoformat(task["run_at"])

    await wait_until(due, timeout=5, what="the cancelled task's run_at")
    sent = await dispatch_pending(
        repository=repository, publisher=publisher, limit=100, min_age_seconds=0
    )
    assert sent == 0
    assert publisher.published == []
    assert repository.rows[task_id].status is TaskStatus.CANCELLED


class TimedPublisher(RecordingPublisher):
    """Notes when each message went out."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, datetime] = {}

    async def publish(
        self,
        message: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        await super().publish(
            message, attempts=attempts, lookups=lookups, delay_seconds=delay_seconds
        )
        self.times[message.task_id] = datetime.now(UTC)


async def test_the_dispatcher_wakes_for_a_task_due_before_its_interval_is_up(
    repository: InMemoryTaskRepository,
) -> None:
    publisher = TimedPublisher()
    settings = load_settings(max_delay_seconds=MAX_DELAY)
    app = create_app(settings, Backends(repository=repository, publisher=publisher))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        first = await submit(client, delay_seconds=0.4)
        second = await submit(client, delay_seconds=0.8)
        run_at = {task_id: repository.rows[task_id].run_at for task_id in (first, second)}
    # An interval far longer than the test: only the wake-up for the next due task can send
    # them in time.
    loop = asyncio.create_task(
        run_dispatcher(
            repository=repository,
            publisher=publisher,
            interval_seconds=60,
            min_age_seconds=2,
            batch_size=10,
        )
    )
    try:

        async def both_sent() -> bool:
            return set(publisher.times) == {first, second}

        await wait_until(both_sent, timeout=5, what="both scheduled tasks published")
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
    for task_id, sent_at in publisher.times.items():
        due = run_at[task_id]
        assert due is not None
        assert due <= sent_at <= due + timedelta(seconds=1), (task_id, due, sent_at)
    assert repository.dispatched == {first, second}


class SlowInsert(InMemoryTaskRepository):
    """A create whose commit lands `seconds` after the row's time was taken."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def create(self, task: NewTask) -> TaskRecord:
        record = await super().create(task)
        await asyncio.sleep(self.seconds)  # the slow commit, not a synchronisation
        return record


class RacingPublisher(RecordingPublisher):
    """While `racing`, each publish lets a dispatcher pass run before it is confirmed, as a
    replica's dispatcher may between an API's publish and its outbox mark."""

    def __init__(self, repository: InMemoryTaskRepository) -> None:
        super().__init__()
        self.repository = repository
        self.racing = False

    async def publish(
        self,
        message: TaskMessage,
        *,
        attempts: int = 0,
        lookups: int = 0,
        delay_seconds: float = 0.0,
    ) -> None:
        await super().publish(
            message, attempts=attempts, lookups=lookups, delay_seconds=delay_seconds
        )
        if self.racing:
            self.racing = False
            await dispatch_pending(
                repository=self.repository, publisher=self, limit=10, min_age_seconds=2
            )


async def test_a_task_due_while_its_insert_commits_is_published_once_by_the_dispatcher() -> None:
    # run_at falls after the row's time but before the request is done: the dispatcher sees
    # a scheduled task that is due, so the API must not publish it as well.
    repository = SlowInsert(seconds=0.2)
    publisher = RacingPublisher(repository)
    app = create_app(load_settings(), Backends(repository=repository, publisher=publisher))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        publisher.racing = True
        task_id = await submit(client, delay_seconds=0.1)
        publisher.racing = False
    record = repository.rows[task_id]
    assert record.run_at is not None
    assert record.updated_at < record.run_at < datetime.now(UTC)

    await dispatch_pending(repository=repository, publisher=publisher, limit=10, min_age_seconds=2)

    assert [message.task_id for message in publisher.published] == [task_id]
    assert repository.dispatched == {task_id}


def test_the_helper_writes_an_offset() -> None:
    # Without one, the 400 cases above would prove nothing about the offset rule.
    assert datetime.fromisoformat(rfc3339(0)).utcoffset() == timedelta(0)
    assert rfc3339(0, offset_hours=9).endswith("+09:00")
