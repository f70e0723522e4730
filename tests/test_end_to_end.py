"""Both services as real processes (started the way `make api` / `make worker` start them),
against the real MySQL/MariaDB and RabbitMQ, in a scratch database and vhost."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import Settings
from testkit.polling import wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

TASK = {"title": "Resize images", "description": "thumbnails", "metadata": {"album": 7}}


@dataclass
class Stack:
    settings: Settings
    api: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    client: httpx.AsyncClient
    logs: Path


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "processing_delay_min_seconds": 0.5,
        "processing_delay_max_seconds": 1.0,
        "log_format": "json",
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct


@pytest.fixture(scope="module")
def processes(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path]]:
    logs = tmp_path_factory.mktemp("logs")
    env = service_environment(settings)
    with (
        service_process("api-service", env, logs / "api.log") as api,
        service_process("worker-service", env, logs / "worker.log") as worker,
    ):
        yield api, worker, logs


@pytest.fixture(scope="module")
async def stack(
    settings: Settings,
    processes: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path],
) -> AsyncIterator[Stack]:
    api, worker, logs = processes
    base_url = f"http://127.0.0.1:{settings.api_port}"
    async with api_client(base_url) as client:

        async def healthy() -> bool:
            assert api.poll() is None, (logs / "api.log").read_text()
            try:
                return (await client.get("/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(healthy, timeout=30, interval=0.1, what="API /health")
        yield Stack(settings, api, worker, client, logs)


async def status_of(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/tasks/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def wait_completed(
    client: httpx.AsyncClient, task_id: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await status_of(client, task_id)
        return body if body["status"] == "COMPLETED" else None

    return await wait_until(probe, timeout=timeout, interval=0.1, what=f"{task_id} COMPLETED")


async def test_submitted_task_is_pending_then_completed(stack: Stack) -> None:
    response = await stack.client.post("/api/tasks", json=TASK)
    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert response.headers["location"] == f"/api/tasks/{task_id}"

    first = await status_of(stack.client, task_id)
    assert first["status"] in ("PENDING", "PROCESSING")
    assert first["completed_at"] is None

    done = await wait_completed(stack.client, task_id)
    assert done["completed_at"] is not None
    assert done["completed_at"] >= done["created_at"]
    assert (done["title"], done["metadata"]) == (TASK["title"], TASK["metadata"])


async def test_hundred_concurrent_tasks_all_complete(stack: Stack) -> None:
    responses = await asyncio.gather(
        *(stack.client.post("/api/tasks", json={**TASK, "title": f"task {n}"}) for n in range(100))
    )
    assert [r.status_code for r in responses] == [202] * 100
    ids = [r.json()["task_id"] for r in responses]
    assert len(set(ids)) == 100
    for task_id in ids:
        await wait_completed(stack.client, task_id, timeout=60)


async def test_errors_over_real_http(stack: Stack) -> None:
    client = stack.client
    missing = await client.get("/api/tasks/5f0c8f8e-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.post("/api/tasks", json={"title": "t"})).status_code == 400
    assert (
        await client.post("/api/tasks", content=b"{", headers={"content-type": "application/json"})
    ).status_code == 400
    assert (
        await client.post("/api/tasks", content=b"x", headers={"content-type": "text/plain"})
    ).status_code == 415

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "t", "description": "'
        for _ in range(1100):
            yield b"d" * 1024
        yield b'"}'

    too_big = await client.post(
        "/api/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413
    assert too_big.json()["status"] == 413
    declared = await client.post("/api/tasks", json={"title": "t", "description": "d" * 1_100_000})
    assert declared.status_code == 413


async def test_one_task_id_tells_its_story_across_both_logs(stack: Stack) -> None:
    task_id = (await stack.client.post("/api/tasks", json=TASK)).json()["task_id"]
    await wait_completed(stack.client, task_id)

    async def story() -> list[str] | None:
        events = []
        for name in ("api.log", "worker.log"):
            for line in (stack.logs / name).read_text().splitlines():
                if task_id in line:
                    entry = json.loads(line)
                    published = " (published)" if entry.get("published") is True else ""
                    events.append(f"{entry['service']}:{entry['event']}{published}")
        wanted = [
            "api:task accepted (published)",
            "worker:task claimed",
            "worker:task completed",
        ]
        return events if all(event in events for event in wanted) else None

    await wait_until(story, timeout=10, what="log lines for the task")


async def test_sigterm_lets_the_in_flight_task_finish_and_exits_zero(stack: Stack) -> None:
    task_id = (await stack.client.post("/api/tasks", json=TASK)).json()["task_id"]

    async def processing() -> bool:
        return (await status_of(stack.client, task_id))["status"] in ("PROCESSING", "COMPLETED")

    await wait_until(processing, timeout=20, what="PROCESSING")
    stack.worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(stack.worker.wait, 30) == 0
    assert (await status_of(stack.client, task_id))["status"] == "COMPLETED"
