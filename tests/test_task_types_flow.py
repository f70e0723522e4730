"""Task types end to end: both services as real processes on the real MySQL/MariaDB and
RabbitMQ. Results, progress on the event stream, a CPU-bound task beside short ones, timeouts
(a CPU-bound one's process replaced), a payload no handler can take, a type no worker has,
and a cancel of a CPU-bound task."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from test_end_to_end import Stack, processes, stack, status_of, wait_completed
from test_task_resource import sse_events

from common.messages import TaskMessage
from common.mysql import MySQLTaskRepository
from common.settings import Settings
from common.tasks import NewTask
from testkit import fixtures
from testkit.broker import publish_task, take_all
from testkit.polling import wait_until
from testkit.processes import free_port

pytestmark = pytest.mark.integration

__all__ = ["processes", "stack"]  # the stack of test_end_to_end, with this module's settings
repository = fixtures.repository

BASE = {"title": "typed", "description": "a task of a type"}


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": 0.05,
        "processing_delay_max_seconds": 0.1,
        "log_format": "json",
        "worker_concurrency": 16,
        "cpu_pool_size": 1,
        "retry_backoff_base_seconds": 0.2,
        "retry_backoff_factor": 1.0,
        "retry_backoff_max_seconds": 0.2,
        "unknown_type_max_attempts": 2,
        "dispatch_min_age_seconds": 600,
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


async def submit(client: httpx.AsyncClient, **fields: Any) -> str:
    response = await client.post("/api/tasks", json={**BASE, **fields})
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def wait_status(
    client: httpx.AsyncClient, task_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await status_of(client, task_id)
        return body if body["status"] == status else None

    return await wait_until(probe, timeout=timeout, interval=0.05, what=f"{task_id} {status}")


def chain(rounds: int, seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def pool_pids(stack: Stack) -> set[int]:
    """The worker's pool processes alive now: its children started by multiprocessing's
    spawn (not its resource tracker)."""
    pids: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == stack.worker.pid and b"spawn_main" in cmdline:
            pids.add(int(entry.name))
    return pids


async def test_a_result_is_stored_with_completed(stack: Stack) -> None:
    payload = {"size_bytes": 300_000, "chunk_bytes": 65536, "seed": 3}
    task_id = await submit(stack.client, type="checksum", payload=payload)
    task = await wait_completed(stack.client, task_id)
    expected = hashlib.sha256(random.Random(3).randbytes(300_000)).hexdigest()
    assert task["result"] == {"sha256": expected, "bytes": 300_000, "chunks": 5}
    assert task["progress"] == 1.0
    assert task["payload"] == payload


async def test_progress_reaches_the_event_stream_at_most_once_a_second(stack: Stack) -> None:
    rounds = 8_000_000  # a few seconds in the pool
    task_id = await submit(stack.client, type="hash_chain", payload={"rounds": rounds})
    frames: list[dict[str, Any]] = []
    async with stack.client.stream("GET", f"/api/tasks/{task_id}/events", timeout=60) as stream:
        async for frame in sse_events(stream):
            if "data" in frame:
                frames.append(frame["data"])
    kinds = [frame["kind"] for frame in frames]
    assert kinds[-1] == "completed", kinds
    reports = [frame for frame in frames if frame["kind"] == "progress"]
    assert len(reports) >= 2, kinds
    fractions = [frame["progress"] for frame in reports]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] <= fractions[-1] <= 1.0
    assert all(frame["note"].endswith(f"of {rounds:,} rounds") for frame in reports)
    times = [frame["updated_at"] for frame in reports]
    gaps = [seconds_between(a, b) for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.95, gaps  # merged: never two writes within the second
    task = await status_of(stack.client, task_id)
    assert task["result"] == {"digest": chain(rounds, ""), "rounds": rounds}


async def test_short_tasks_finish_on_time_while_a_cpu_bound_task_runs(stack: Stack) -> None:
    long_id = await submit(stack.client, type="hash_chain", payload={"rounds": 6_000_000})

    async def running() -> bool:
        task = await status_of(stack.client, long_id)
        return bool(task["status"] == "PROCESSING")

    await wait_until(running, timeout=10, interval=0.05, what="the hash chain running")
    short_ids = []
    for _ in range(20):
        short_ids.append(await submit(stack.client))
        await asyncio.sleep(0.05)  # paced submissions, not a synchronisation
    for task_id in short_ids:
        task = await wait_completed(stack.client, task_id)
        # 50-100 ms of simulated work: the event loop was never held by the chain.
        assert seconds_between(task["created_at"], task["completed_at"]) < 1.0, task
    assert (await status_of(stack.client, long_id))["status"] == "PROCESSING"
    await wait_completed(stack.client, long_id, timeout=60)


async def test_an_attempt_past_its_timeout_fails_and_retries(stack: Stack) -> None:
    task_id = await submit(
        stack.client,
        type="checksum",
        payload={"size_bytes": 1 << 30, "chunk_bytes": 4096},
        timeout_seconds=1,
    )
    task = await wait_status(stack.client, task_id, "FAILED", timeout=30)
    assert task["attempts"] == 3  # checksum's max_attempts
    assert task["last_error"] == "TimeoutError: the attempt timed out after 1 s"


async def test_a_cpu_bound_attempt_past_its_timeout_has_its_process_replaced(
    stack: Stack,
) -> None:
    task_id = await submit(
        stack.client, type="hash_chain", payload={"rounds": 400_000_000}, timeout_seconds=1
    )
    await wait_status(stack.client, task_id, "PROCESSING")
    running = pool_pids(stack)
    assert len(running) == 1  # CPU_POOL_SIZE=1
    task = await wait_status(stack.client, task_id, "FAILED", timeout=40)
    assert task["last_error"] == "TimeoutError: the attempt timed out after 1 s"
    assert task["attempts"] == 3

    async def replaced() -> bool:
        alive = pool_pids(stack)
        return len(alive) == 1 and not alive & running

    await wait_until(replaced, timeout=5, interval=0.05, what="the pool process replaced")
    # The pool still works.
    after = await submit(stack.client, type="hash_chain", payload={"rounds": 1000})
    done = await wait_completed(stack.client, after)
    assert done["result"]["digest"] == chain(1000, "")


async def test_cancel_stops_a_cpu_bound_task_and_its_process(stack: Stack) -> None:
    task_id = await submit(stack.client, type="hash_chain", payload={"rounds": 400_000_000})

    async def reported() -> bool:
        task = await status_of(stack.client, task_id)
        return task["progress"] is not None

    await wait_until(reported, timeout=20, interval=0.05, what="the chain's first progress")
    running = pool_pids(stack)
    assert len(running) == 1
    response = await stack.client.post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "CANCELLED"

    async def replaced() -> bool:
        alive = pool_pids(stack)
        return len(alive) == 1 and not alive & running

    # The process that ran it is terminated, and a fresh one takes its place, within 1 s.
    await wait_until(replaced, timeout=1.5, interval=0.05, what="the pool process replaced")
    assert (await status_of(stack.client, task_id))["status"] == "CANCELLED"
    after = await submit(stack.client, type="hash_chain", payload={"rounds": 1000})
    await wait_completed(stack.client, after)
    assert (await status_of(stack.client, task_id))["status"] == "CANCELLED"


async def test_a_payload_no_handler_can_take_fails_at_once(
    stack: Stack, repository: MySQLTaskRepository, channel: AbstractChannel
) -> None:
    # Only a message that did not come through the API can carry one (an older API, a
    # message written by hand): the worker validates the payload again.
    task = NewTask(str(uuid.uuid4()), "t", "d", None, "hash_chain", {"rounds": -1})
    record = await repository.create(task)
    await publish_task(channel, stack.settings, TaskMessage.from_record(record))
    failed = await wait_status(stack.client, task.task_id, "FAILED")
    assert failed["attempts"] == 1
    assert failed["last_error"].startswith("ValidationError: 1 validation error for hash_chain")


async def test_a_type_no_worker_has_is_passed_on_then_failed_and_dead_lettered(
    stack: Stack, repository: MySQLTaskRepository, channel: AbstractChannel
) -> None:
    task = NewTask(str(uuid.uuid4()), "t", "d", None, "from_the_future", {"x": 1})
    record = await repository.create(task)
    await publish_task(channel, stack.settings, TaskMessage.from_record(record))
    failed = await wait_status(stack.client, task.task_id, "FAILED")
    assert failed["last_error"] == (
        "NoHandler: no worker that received the task has a handler for its type"
        " 'from_the_future' (2 tries, UNKNOWN_TYPE_MAX_ATTEMPTS)"
    )

    # This task's own dead letter: an earlier test's may still be on its way to the DLQ.
    taken: list[str | None] = []

    async def dead_lettered() -> bool:
        dlq = f"{stack.settings.task_queue}.dlq"
        taken.extend(message.message_id for message in await take_all(channel, dlq))
        return task.task_id in taken

    await wait_until(dead_lettered, timeout=10, what="the message in the DLQ")
