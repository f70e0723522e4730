"""Backpressure through the real broker: the work queue's x-max-length with reject-publish
(a publish the broker refuses leaves the task in the outbox, dispatched once there is room,
never lost), and MAX_BACKLOG (past it, new submissions are a 503 problem with Retry-After,
until what waits goes back under it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from conftest import live_app
from test_submit import VALID

from common.settings import Settings
from testkit import fixtures
from testkit.broker import broker_channel, take_all
from testkit.polling import wait_until
from testkit.sql import query

pytestmark = pytest.mark.integration

repository = fixtures.repository

QUEUE_LENGTH = 3
MAX_BACKLOG = 5


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "max_queue_length": QUEUE_LENGTH,
        "max_backlog": MAX_BACKLOG,
        "dispatch_interval_seconds": 0.1,
        "dispatch_min_age_seconds": 0.2,
    }


@pytest.fixture(scope="module")
async def api(direct: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with live_app(direct) as client:
        yield client


@pytest.fixture(scope="module")
async def channel(direct: Settings) -> AsyncIterator[AbstractChannel]:
    async with broker_channel(direct) as channel:
        yield channel


async def depth(channel: AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def undispatched(direct: Settings) -> set[str]:
    rows = await query(direct.database, "SELECT id FROM tasks WHERE dispatched_at IS NULL")
    return {row[0] for row in rows}


async def drain_all(channel: AbstractChannel, direct: Settings, expected: set[str]) -> set[str]:
    """Take messages off the work queue until every one of `expected` came."""
    seen: set[str] = set()

    async def all_came() -> bool:
        seen.update(m.message_id or "" for m in await take_all(channel, direct.task_queue))
        return expected <= seen

    await wait_until(all_came, timeout=30, interval=0.1, what="every task's message")
    return seen


async def test_a_full_queue_refuses_publishes_and_the_outbox_sends_them_later(
    api: httpx.AsyncClient, channel: AbstractChannel, direct: Settings
) -> None:
    answers = [await api.post("/api/tasks", json=VALID) for _ in range(QUEUE_LENGTH + 4)]
    assert {answer.status_code for answer in answers} == {202}  # accepted: stored
    ids = {answer.json()["task_id"] for answer in answers}
    # The broker kept about MAX_QUEUE_LENGTH (a quorum queue checks the bound before it
    # applies a publish, so one in flight may pass it) and refused the others...
    kept = await depth(channel, direct.task_queue)
    assert QUEUE_LENGTH <= kept < len(ids)
    # ... which wait in the outbox, each one exactly once: kept or waiting (the kept ones'
    # outbox marks are written in the background, within moments).

    async def only_the_refused_wait() -> bool:
        return len(await undispatched(direct) & ids) == len(ids) - kept

    await wait_until(only_the_refused_wait, timeout=10, interval=0.05, what="the outbox marks")
    await drain_all(channel, direct, ids)  # room again: the dispatcher sent them
    assert not await undispatched(direct) & ids


async def test_past_max_backlog_submissions_are_a_503_until_it_drains(
    api: httpx.AsyncClient, channel: AbstractChannel, direct: Settings
) -> None:
    accepted: set[str] = set()
    refused: list[httpx.Response] = []

    async def refused_now() -> bool:
        answer = await api.post("/api/tasks", json=VALID)
        if answer.status_code == 202:
            accepted.add(answer.json()["task_id"])
            return False
        refused.append(answer)
        return True

    # The queue holds 3 and the rest waits in the outbox: past 5, the API says no.
    await wait_until(refused_now, timeout=30, interval=0.05, what="a 503 for backpressure")
    [answer] = refused
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "/problems/backpressure"
    assert "MAX_BACKLOG" in answer.json()["detail"]
    assert int(answer.headers["retry-after"]) >= 1
    assert len(accepted) > MAX_BACKLOG

    await drain_all(channel, direct, accepted)  # everything accepted still arrives

    async def taken_again() -> bool:
        answer = await api.post("/api/tasks", json=VALID)
        return answer.status_code == 202

    await wait_until(taken_again, timeout=30, interval=0.1, what="submissions taken again")
