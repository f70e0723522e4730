"""A worker killed with SIGKILL mid-task: its unacked messages come back and another worker
finishes every task, each exactly once. Real processes, real MariaDB and RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel

from common.settings import Settings
from testkit.broker import take_all
from testkit.polling import api_healthy, wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.scratch import service_environment
from testkit.sql import query

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": 1.0,
        "processing_delay_max_seconds": 1.5,
        "log_format": "json",
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


def completions(*logs: Path) -> Counter[str]:
    """How many times each task was committed COMPLETED, from the workers' JSON logs."""
    counts: Counter[str] = Counter()
    for log in logs:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry["event"] == "task completed":
                    counts[entry["task_id"]] += 1
    return counts


async def test_killed_worker_tasks_are_taken_over_and_completed_once(
    settings: Settings, tmp_path: Path
) -> None:
    env = service_environment(settings)
    base_url = f"http://127.0.0.1:{settings.api_port}"
    with service_process("api-service", env, tmp_path / "api.log"):
        async with api_client(base_url) as client:
            await wait_until(lambda: api_healthy(client), timeout=30, what="API up")
            with service_process("worker-service", env, tmp_path / "victim.log") as victim:
                ids = [
                    (
                        await client.post("/api/tasks", json={"title": f"t{n}", "description": "d"})
                    ).json()["task_id"]
                    for n in range(12)
                ]
                await wait_until(
                    lambda: _count(client, ids, "PROCESSING", at_least=3),
                    timeout=20,
                    what="tasks in flight",
                )
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
            with service_process("worker-service", env, tmp_path / "rescuer.log"):
                await wait_until(
                    lambda: _count(client, ids, "COMPLETED", at_least=len(ids)),
                    timeout=60,
                    what="every task COMPLETED",
                )
                tasks = [(await client.get(f"/api/tasks/{i}")).json() for i in ids]
    counts = completions(tmp_path / "victim.log", tmp_path / "rescuer.log")
    assert all(counts[task_id] == 1 for task_id in ids), counts
    # The tasks the victim held were claimed a second time, by the rescuer.
    assert any(task["attempts"] >= 2 for task in tasks)


async def _count(client: httpx.AsyncClient, ids: list[str], status: str, *, at_least: int) -> bool:
    statuses = await asyncio.gather(*(client.get(f"/api/tasks/{i}") for i in ids))
    matching: int = sum(r.json()["status"] == status for r in statuses)
    return matching >= at_least


async def test_sigterm_past_the_grace_hands_tasks_back_and_exits_zero(
    settings: Settings, tmp_path: Path
) -> None:
    slow = settings.model_copy(
        update={
            "processing_delay_min_seconds": 20.0,
            "processing_delay_max_seconds": 20.0,
            "worker_shutdown_grace_seconds": 0.5,
        }
    )
    env = service_environment(slow)
    base_url = f"http://127.0.0.1:{slow.api_port}"
    with service_process("api-service", env, tmp_path / "api.log"):
        async with api_client(base_url) as client:
            await wait_until(lambda: api_healthy(client), timeout=30, what="API up")
            with service_process("worker-service", env, tmp_path / "slow.log") as worker:
                task_id = (
                    await client.post("/api/tasks", json={"title": "slow", "description": "d"})
                ).json()["task_id"]
                await wait_until(
                    lambda: _count(client, [task_id], "PROCESSING", at_least=1), timeout=20
                )
                started = time.monotonic()
                worker.send_signal(signal.SIGTERM)
                assert await asyncio.to_thread(worker.wait, 30) == 0
                assert time.monotonic() - started < 10  # the grace, not the 20 s task
            # The unfinished task went back to the queue; a quick worker completes it.
            quick = service_environment(settings)
            with service_process("worker-service", quick, tmp_path / "quick.log"):
                await wait_until(
                    lambda: _count(client, [task_id], "COMPLETED", at_least=1), timeout=30
                )


async def test_sigterm_lets_the_api_answer_what_it_took_and_every_202_is_kept(
    settings: Settings, channel: AbstractChannel, tmp_path: Path
) -> None:
    """A burst of POSTs and a SIGTERM while they are being answered (no worker runs): the API
    shuts down cleanly, every answer is a 202 (a request it did not take fails on the connection), and
    every 202 is a PENDING row with its message on the queue."""
    await take_all(channel, settings.task_queue)
    env = service_environment(settings)
    base_url = f"http://127.0.0.1:{settings.api_port}"
    answered: list[httpx.Response] = []

    async def post(client: httpx.AsyncClient, n: int) -> httpx.Response | httpx.TransportError:
        try:
            response = await client.post("/api/tasks", json={"title": f"t{n}", "description": "d"})
        except httpx.TransportError as exc:
            return exc
        answered.append(response)
        return response

    async def some_answered() -> bool:
        return len(answered) >= 20

    with service_process("api-service", env, tmp_path / "api.log") as api:
        limits = httpx.Limits(max_connections=32)
        async with api_client(base_url, limits=limits) as client:
            await wait_until(lambda: api_healthy(client), timeout=30, what="API up")
            posts = [asyncio.create_task(post(client, n)) for n in range(400)]
            await wait_until(some_answered, timeout=20, what="the first answers")
            api.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*posts)
            # Uvicorn raises the SIGTERM again once it has shut down cleanly, as its exit code.
            assert await asyncio.to_thread(api.wait, 30) in (0, -signal.SIGTERM)
    assert "api stopped" in (tmp_path / "api.log").read_text()

    statuses = Counter(r.status_code for r in results if isinstance(r, httpx.Response))
    assert set(statuses) == {202}, statuses
    accepted = {r.json()["task_id"] for r in answered}
    rows = await query(
        settings.database,
        f"SELECT id, status FROM tasks WHERE id IN ({', '.join(['%s'] * len(accepted))})",
        *accepted,
    )
    assert {task_id for task_id, _ in rows} == accepted
    assert {status for _, status in rows} == {"PENDING"}
    queued = {m.message_id for m in await take_all(channel, settings.task_queue)}
    assert accepted <= queued
