"""A real Prometheus (Debian's `prometheus` package) on the committed scrape config and alert
rules, its jobs pointed at an API and a worker started here as processes: it scrapes the
metrics the dashboard reads, loads every rule, and fires a test alert through the same path.

RabbitMQ's job is left out: the broker on this machine need not run its Prometheus plugin.
Its queries are still parsed by this Prometheus, with the dashboard's others."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from test_end_to_end import processes

from common.settings import Settings
from testkit.monitoring import (
    API_METRICS,
    DASHBOARD,
    WORKER_METRICS,
    Prometheus,
    alert_rules,
    dashboard_queries,
    exported_metric,
    instant_query,
    local_scrape_config,
    metric_names,
    prometheus_binary,
    prometheus_server,
    series_names,
)
from testkit.polling import wait_until
from testkit.processes import api_client, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        prometheus_binary() is None,
        reason="needs the prometheus binary on PATH (Debian: apt-get install prometheus)",
    ),
]

__all__ = ["processes"]  # the API and worker of test_end_to_end, with this module's settings

TEST_ALERT = "TestAlwaysFiring"
TASKS = 3
# Labelled by backend: a series appears with the first reconnect, and none happens here.
ONLY_AFTER_AN_EVENT = {"task_worker_reconnects_total"}
# The dashboard's variables, as Grafana fills them in.
VARIABLES = {"$__rate_interval": "1m", "$queue": "task_queue"}

T = TypeVar("T")


@dataclass
class Stack:
    settings: Settings
    api: httpx.AsyncClient
    logs: Path


@pytest.fixture(scope="module")
def scratch_overrides() -> dict[str, Any]:
    return {
        "api_port": free_port(),
        "worker_health_port": free_port(),
        "processing_delay_min_seconds": 0.05,
        "processing_delay_max_seconds": 0.1,
    }


@pytest.fixture(scope="module")
def settings(direct: Settings) -> Settings:
    return direct  # what test_end_to_end's `processes` starts the services with


@pytest.fixture(scope="module")
async def stack(
    direct: Settings,
    processes: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path],
) -> AsyncIterator[Stack]:
    api, worker, logs = processes
    worker_ready = f"http://127.0.0.1:{direct.worker_health_port}/health/ready"
    async with api_client(f"http://127.0.0.1:{direct.api_port}") as client:

        async def ready() -> bool:
            for process, log in ((api, "api.log"), (worker, "worker.log")):
                assert process.poll() is None, (logs / log).read_text()
            try:
                api_ok = (await client.get("/health/ready")).status_code == 200
                return api_ok and (await client.get(worker_ready)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=30, interval=0.1, what="API and worker ready")
        yield Stack(direct, client, logs)


@pytest.fixture(scope="module")
def prometheus_process(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    test_rules = workdir / "test-alert.yml"
    always = {"alert": TEST_ALERT, "expr": "vector(1)", "labels": {"severity": "none"}}
    test_rules.write_text(yaml.safe_dump({"groups": [{"name": "test", "rules": [always]}]}))
    targets = {
        "task-api": f"127.0.0.1:{stack.settings.api_port}",
        "task-worker": f"127.0.0.1:{stack.settings.worker_health_port}",
    }
    config = local_scrape_config(targets=targets, extra_rule_files=[test_rules])
    with prometheus_server(config, workdir) as server:
        yield server


@pytest.fixture(scope="module")
async def prometheus(stack: Stack, prometheus_process: Prometheus) -> Prometheus:
    """Prometheus ready, and then the known work done (do_known_work) while it scrapes."""
    async with httpx.AsyncClient(base_url=prometheus_process.url, timeout=10) as client:

        async def answers() -> bool:
            try:
                return (await client.get("/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_for(prometheus_process, "Prometheus ready", answers)
    await do_known_work(stack)
    return prometheus_process


async def do_known_work(stack: Stack) -> None:
    """TASKS tasks to COMPLETED, the first submitted twice with one Idempotency-Key."""
    task = {"title": "Observed", "description": "for Prometheus"}
    key = {"Idempotency-Key": "monitoring-test-1"}
    ids = []
    for n in range(TASKS):
        response = await stack.api.post(
            "/api/tasks", json={**task, "title": f"{n}"}, headers=key if n == 0 else {}
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["task_id"])
    replay = await stack.api.post("/api/tasks", json={**task, "title": "0"}, headers=key)
    assert replay.json()["task_id"] == ids[0]

    async def all_completed() -> bool:
        statuses = [(await stack.api.get(f"/api/tasks/{i}")).json()["status"] for i in ids]
        return all(status == "COMPLETED" for status in statuses)

    await wait_until(all_completed, timeout=30, interval=0.1, what=f"{TASKS} tasks COMPLETED")


def expected_series(metrics: dict[str, tuple[str, ...]]) -> set[str]:
    return {n for m in metrics if m not in ONLY_AFTER_AN_EVENT for n in series_names(m)}


async def scraped_series(client: httpx.AsyncClient) -> dict[str, set[str]]:
    """The series names Prometheus holds now, by job."""
    found: dict[str, set[str]] = {}
    for sample in await instant_query(client, 'group by (__name__, job) ({job=~"task-.+"})'):
        found.setdefault(sample["metric"]["job"], set()).add(sample["metric"]["__name__"])
    return found


async def firing_alerts(client: httpx.AsyncClient) -> set[str]:
    alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
    return {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}


async def wait_for(
    server: Prometheus, what: str, probe: Callable[[], Awaitable[T | None]], timeout: float = 60
) -> T:
    """wait_until, failing with Prometheus's log when the process has stopped."""

    async def checked() -> T | None:
        assert server.process.poll() is None, server.output()
        return await probe()

    return await wait_until(checked, timeout=timeout, interval=0.5, what=what)


async def test_prometheus_scrapes_both_services_and_fires_a_test_alert(
    stack: Stack, prometheus: Prometheus
) -> None:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:
        wanted = {
            "task-api": expected_series(API_METRICS),
            "task-worker": expected_series(WORKER_METRICS),
        }
        missing: dict[str, set[str]] = {}

        async def all_scraped() -> bool:
            found = await scraped_series(client)
            missing.clear()
            missing.update({job: names - found.get(job, set()) for job, names in wanted.items()})
            return not any(missing.values())

        try:
            await wait_for(prometheus, "the services' metrics", all_scraped)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; not scraped: {missing}; {stack.logs}") from None

        async def test_alert_fires() -> bool:
            return TEST_ALERT in await firing_alerts(client)

        await wait_for(prometheus, f"{TEST_ALERT} firing", test_alert_fires)
        # A healthy system fires none of the committed alerts.
        assert await firing_alerts(client) == {TEST_ALERT}
        up = await instant_query(client, "up")
        assert {(s["metric"]["job"], s["value"][1]) for s in up} == {
            ("task-api", "1"),
            ("task-worker", "1"),
        }


async def test_each_metric_has_the_labels_the_dashboard_reads(prometheus: Prometheus) -> None:
    declared = {**API_METRICS, **WORKER_METRICS}
    labels_seen: dict[str, set[frozenset[str]]] = {}
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:

        async def every_metric_seen() -> bool:
            labels_seen.clear()
            for sample in await instant_query(client, '{job=~"task-.+"}'):
                labels = dict(sample["metric"])
                metric = exported_metric(labels.pop("__name__"))
                own = frozenset(labels) - {"instance", "job", "le"}
                labels_seen.setdefault(metric, set()).add(own)
            return set(labels_seen) >= set(declared) - ONLY_AFTER_AN_EVENT

        await wait_for(prometheus, "every metric scraped", every_metric_seen)
    for metric, labels in declared.items():
        assert labels_seen.get(metric, {frozenset(labels)}) == {frozenset(labels)}, metric


async def test_prometheus_counts_the_known_work(stack: Stack, prometheus: Prometheus) -> None:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:
        completed = 'sum(task_worker_tasks_finished_total{outcome="completed"})'

        async def counted() -> bool:
            result = await instant_query(client, completed)
            return bool(result) and float(result[0]["value"][1]) == TASKS

        await wait_for(prometheus, f"{completed} == {TASKS}", counted)
        replays = await instant_query(client, "sum(task_api_idempotent_replays_total)")
        assert float(replays[0]["value"][1]) == 1


async def test_every_committed_rule_loads(prometheus: Prometheus) -> None:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:

        async def loaded() -> list[dict[str, Any]] | None:
            groups = (await client.get("/api/v1/rules")).json()["data"]["groups"]
            rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
            return rules if all("health" in r and r["health"] != "unknown" for r in rules) else None

        rules = await wait_for(prometheus, "every rule evaluated", loaded)
        assert {rule["name"] for rule in rules} == {r["alert"] for r in alert_rules()} | {
            TEST_ALERT
        }
        assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


async def test_every_dashboard_query_runs_and_shows_the_services_data(
    prometheus: Prometheus,
) -> None:
    """Every query parses; one whose metrics the services export shows data (RabbitMQ's,
    not scraped here, and ONLY_AFTER_AN_EVENT's may be empty)."""
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:
        empty: list[str] = []

        async def all_show_data() -> bool:
            empty.clear()
            for title, expression in queries:
                for variable, value in VARIABLES.items():
                    expression = expression.replace(variable, value)
                result = await instant_query(client, expression)
                names = metric_names(expression)
                ours = not any(n.startswith("rabbitmq_") or n in ONLY_AFTER_AN_EVENT for n in names)
                if ours and not result:
                    empty.append(f"{title}: {expression}")
            return not empty

        try:
            await wait_for(prometheus, "every dashboard query with data", all_show_data)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; empty: {empty}") from None
