"""GET /metrics against the fakes: request counts by route template, tasks accepted, replays,
publishes, the outbox gauges, and METRICS_ENABLED=false turning it all off."""

from __future__ import annotations

import uuid

import httpx
import pytest
from fastapi import FastAPI

from api.metrics import ApiMetrics, MeteredPublisher
from common.errors import BrokerUnavailable
from common.messages import TaskMessage
from common.metrics import OutboxBacklog, exposition
from common.settings import Settings, load_settings
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.metrics import samples

pytestmark = pytest.mark.unit

VALID = {"title": "t", "description": "d"}


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_requests_are_counted_by_route_template_and_status_class(
    client: httpx.AsyncClient,
) -> None:
    task_ids = []
    for _ in range(3):
        response = await client.post("/api/tasks", json=VALID)
        assert response.status_code == 202
        task_ids.append(response.json()["task_id"])
    for task_id in task_ids:
        assert (await client.get(f"/api/tasks/{task_id}")).status_code == 200
    assert (await client.get(f"/api/tasks/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/no/such/path/42")).status_code == 404
    assert (await client.post("/api/tasks", json={"title": 5})).status_code == 400

    text = await scrape(client)
    requests = samples(text, "task_api_http_requests_total")
    assert requests['{method="POST",route="/api/tasks",status_class="2xx"}'] == 3
    assert requests['{method="POST",route="/api/tasks",status_class="4xx"}'] == 1
    assert requests['{method="GET",route="/api/tasks/{task_id}",status_class="2xx"}'] == 3
    assert requests['{method="GET",route="/api/tasks/{task_id}",status_class="4xx"}'] == 1
    assert requests['{method="GET",route="unmatched",status_class="4xx"}'] == 1
    durations = samples(text, "task_api_http_request_duration_seconds_count")
    assert durations['{method="GET",route="/api/tasks/{task_id}"}'] == 4
    assert samples(text, "task_api_tasks_accepted_total") == {'{type="simulated"}': 3}
    for task_id in task_ids:  # no id, and no raw path, in any label
        assert task_id not in text
    assert "/no/such/path" not in text


async def test_a_replay_counts_as_a_replay_not_as_an_acceptance(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "metrics-replay"}
    for _ in range(3):
        assert (await client.post("/api/tasks", json=VALID, headers=headers)).status_code == 202
    text = await scrape(client)
    assert samples(text, "task_api_tasks_accepted_total") == {'{type="simulated"}': 1}
    assert samples(text, "task_api_idempotent_replays_total") == {"": 2}


async def test_the_outbox_gauges_are_read_at_each_scrape(
    settings: Settings, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    backlog = OutboxBacklog(tasks=7, oldest_age_seconds=12.5)

    async def outbox() -> OutboxBacklog:
        return backlog

    backends = Backends(repository=repository, publisher=publisher, outbox_backlog=outbox)
    transport = httpx.ASGITransport(app=create_app(settings, backends))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        text = await scrape(client)
        assert samples(text, "task_api_outbox_backlog") == {"": 7}
        assert samples(text, "task_api_outbox_oldest_age_seconds") == {"": 12.5}
        backlog = OutboxBacklog()
        text = await scrape(client)
        assert samples(text, "task_api_outbox_backlog") == {"": 0}


async def test_publishes_are_counted_by_outcome_and_timed() -> None:
    metrics = ApiMetrics()
    inner = RecordingPublisher()
    publisher = MeteredPublisher(inner, metrics)
    message = TaskMessage(str(uuid.uuid4()), "t", None, None)
    await publisher.publish(message)
    await publisher.publish(message)
    inner.fail = True
    with pytest.raises(BrokerUnavailable):
        await publisher.publish(message)
    text = exposition(metrics.registry).decode()
    assert samples(text, "task_api_publishes_total") == {
        '{outcome="confirmed"}': 2,
        '{outcome="failed"}': 1,
    }
    assert samples(text, "task_api_publish_duration_seconds_count") == {"": 3}


@pytest.fixture
def metrics_off_app(repository: InMemoryTaskRepository, publisher: RecordingPublisher) -> FastAPI:
    settings = load_settings(metrics_enabled=False)
    return create_app(settings, Backends(repository=repository, publisher=publisher))


async def test_metrics_off_means_no_metrics_route(metrics_off_app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=metrics_off_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.post("/api/tasks", json=VALID)).status_code == 202
        assert (await client.get("/metrics")).status_code == 404
