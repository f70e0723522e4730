"""The metrics' values after a known amount of work, with the services as real processes and
the API in two processes (API_WORKERS=2, prometheus-client's multiprocess mode): N tasks
submitted, M of them failing at their first attempt, every count summed over both API
processes, and no task id in any label."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.settings import Settings
from testkit.metrics import label_values, samples
from testkit.polling import wait_until
from testkit.processes import api_client, free_port, service_process
from testkit.scratch import service_environment

pytestmark = pytest.mark.integration

SUBMITTED = 8  # N
FAILING = 3  # M: `simulated` tasks, failing at every attempt, with one attempt allowed
READS = 20  # GET /api/tasks/{task_id}, each on a new connection: spread over both processes


@dataclass
class Stack:
    settings: Settings
    api: httpx.AsyncClient
    worker_metrics: str
    metrics_dir: Path
    logs: Path


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "api_workers": 2,
        "worker_health_port": free_port(),
        "processing_failure_rate": 1.0,
        "processing_delay_min_seconds": 0.01,
        "processing_delay_max_seconds": 0.02,
        "max_attempts": 1,
    }


@pytest.fixture(scope="module")
def processes(
    direct: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path, Path]]:
    logs = tmp_path_factory.mktemp("logs")
    metrics_dir = tmp_path_factory.mktemp("metrics")
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # from an "earlier run": emptied
    env = service_environment(direct)
    api_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with (
        service_process("api-service", api_env, logs / "api.log") as api,
        service_process("worker-service", env, logs / "worker.log") as worker,
    ):
        yield api, worker, metrics_dir, logs


@pytest.fixture(scope="module")
async def stack(
    direct: Settings,
    processes: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path, Path],
) -> AsyncIterator[Stack]:
    api, worker, metrics_dir, logs = processes
    worker_url = f"http://127.0.0.1:{direct.worker_health_port}"
    async with api_client(f"http://127.0.0.1:{direct.api_port}") as client:

        async def ready() -> bool:
            for process, log in ((api, "api.log"), (worker, "worker.log")):
                assert process.poll() is None, (logs / log).read_text()
            try:
                api_ok = (await client.get("/health/ready")).status_code == 200
                return api_ok and (await client.get(f"{worker_url}/health/ready")).is_success
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=30, interval=0.1, what="API and worker ready")
        yield Stack(direct, client, f"{worker_url}/metrics", metrics_dir, logs)


async def scrape(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
async def known_work(stack: Stack) -> list[str]:
    """N tasks submitted (M failing), READS reads on new connections, all tasks final."""
    task_ids = []
    for n in range(SUBMITTED):
        body: dict[str, Any] = {"title": f"t{n}", "description": "d"}
        if n >= FAILING:
            body |= {"type": "hash_chain", "payload": {"rounds": 1000}}
        response = await stack.api.post("/api/tasks", json=body)
        assert response.status_code == 202, response.text
        task_ids.append(response.json()["task_id"])
    for n in range(READS):
        headers = {"Connection": "close"}  # a new connection each: the kernel spreads them
        response = await stack.api.get(f"/api/tasks/{task_ids[n % SUBMITTED]}", headers=headers)
        assert response.status_code == 200

    async def all_final() -> bool:
        statuses = [(await stack.api.get(f"/api/tasks/{i}")).json()["status"] for i in task_ids]
        return all(status in ("COMPLETED", "FAILED") for status in statuses)

    await wait_until(all_final, timeout=60, interval=0.2, what="every task final")
    return task_ids


async def test_the_api_counts_the_work_summed_over_its_processes(
    stack: Stack, known_work: list[str]
) -> None:
    text = await scrape(stack.api, "/metrics")
    assert samples(text, "task_api_tasks_accepted_total") == {
        '{type="simulated"}': FAILING,
        '{type="hash_chain"}': SUBMITTED - FAILING,
    }
    requests = samples(text, "task_api_http_requests_total")
    assert requests['{method="POST",route="/api/tasks",status_class="2xx"}'] == SUBMITTED
    reads = requests['{method="GET",route="/api/tasks/{task_id}",status_class="2xx"}']
    assert reads >= READS + SUBMITTED  # and the polls of all_final
    durations = samples(text, "task_api_http_request_duration_seconds_count")
    assert durations['{method="POST",route="/api/tasks"}'] == SUBMITTED
    assert samples(text, "task_api_publishes_total")['{outcome="confirmed"}'] >= SUBMITTED
    assert samples(text, "task_api_publish_duration_seconds_count")[""] >= SUBMITTED
    assert samples(text, "task_api_outbox_backlog") == {"": 0}
    assert samples(text, "task_api_event_streams_open") == {"": 0}
    assert not any(task_id in text for task_id in known_work)
    # Both processes wrote their own files, and an earlier run's were cleared away.
    counters = {path.name for path in stack.metrics_dir.glob("counter_*.db")}
    assert "counter_1.db" not in counters
    assert len(counters) >= 2, counters


async def test_n_requests_spread_over_both_processes_count_n(
    stack: Stack, known_work: list[str]
) -> None:
    before = samples(await scrape(stack.api, "/metrics"), "task_api_http_requests_total")
    for _ in range(READS):
        response = await stack.api.get("/api/task-types", headers={"Connection": "close"})
        assert response.status_code == 200
    after = samples(await scrape(stack.api, "/metrics"), "task_api_http_requests_total")
    key = '{method="GET",route="/api/task-types",status_class="2xx"}'
    assert after[key] - before.get(key, 0) == READS


async def test_the_worker_counts_outcomes_and_times_attempts(
    stack: Stack, known_work: list[str]
) -> None:
    async def finished() -> dict[str, float] | None:
        text = await scrape(stack.api, stack.worker_metrics)
        counts = samples(text, "task_worker_tasks_finished_total")
        return counts if sum(counts.values()) >= SUBMITTED else None

    counts = await wait_until(finished, timeout=30, interval=0.1, what="worker metrics")
    assert counts == {
        '{outcome="completed",type="hash_chain"}': SUBMITTED - FAILING,
        '{outcome="failed",type="simulated"}': FAILING,
    }
    text = await scrape(stack.api, stack.worker_metrics)
    assert samples(text, "task_worker_attempt_duration_seconds_count") == {
        '{type="hash_chain"}': SUBMITTED - FAILING,
        '{type="simulated"}': FAILING,
    }
    waits = samples(text, "task_worker_queue_wait_seconds_count")
    assert waits == {'{type="hash_chain"}': SUBMITTED - FAILING, '{type="simulated"}': FAILING}
    assert samples(text, "task_worker_tasks_in_flight") == {"": 0}
    assert samples(text, "task_worker_reconnects_total") == {
        '{backend="database"}': 0,
        '{backend="broker"}': 0,
    }
    assert not any(task_id in value for task_id in known_work for value in label_values(text))
