"""Task types at the API, against the fakes: a typed submit is validated against its type's
payload model, and GET /api/task-types lists the catalogue."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from test_submit import assert_problem

from common.task_types import CATALOGUE
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit

BASE = {"title": "t", "description": "d"}


async def test_a_task_without_a_type_is_simulated(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    response = await client.post("/api/tasks", json=BASE)
    task_id = response.json()["task_id"]
    row = repository.rows[task_id]
    assert (row.type, row.payload, row.timeout_seconds) == ("simulated", None, None)
    [message] = publisher.published
    assert (message.type, message.payload, message.timeout_seconds) == ("simulated", None, None)
    shown = (await client.get(f"/api/tasks/{task_id}")).json()
    assert shown["type"] == "simulated"
    assert shown["payload"] is None
    assert shown["result"] is None
    assert shown["progress"] is None


async def test_a_typed_task_is_stored_with_its_payload_defaults_filled_in(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    body = {**BASE, "type": "checksum", "payload": {"size_bytes": 4096}, "timeout_seconds": 30}
    response = await client.post("/api/tasks", json=body)
    assert response.status_code == 202, response.text
    row = repository.rows[response.json()["task_id"]]
    expected = {"size_bytes": 4096, "chunk_bytes": 1 << 20, "seed": 0}
    assert (row.type, row.payload, row.timeout_seconds) == ("checksum", expected, 30)
    [message] = publisher.published
    assert (message.type, message.payload, message.timeout_seconds) == ("checksum", expected, 30)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"type": "no_such_type"}, "type"),
        ({"type": ""}, "type"),
        ({"type": 5}, "type"),
        ({"type": "hash_chain"}, "payload.rounds"),  # required
        ({"type": "hash_chain", "payload": {"rounds": 0}}, "payload.rounds"),
        ({"type": "hash_chain", "payload": {"rounds": "5"}}, "payload.rounds"),
        ({"type": "hash_chain", "payload": {"rounds": 5, "x": 1}}, "payload.x"),
        ({"type": "checksum", "payload": {"size_bytes": -1}}, "payload.size_bytes"),
        ({"type": "simulated", "payload": {"anything": 1}}, "payload.anything"),
        ({"type": "checksum", "payload": [1]}, "payload"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 1.5}, "timeout_seconds"),
        ({"timeout_seconds": "10"}, "timeout_seconds"),
        ({"timeout_seconds": 601}, "timeout_seconds"),  # simulated's maximum is 600
        (
            {"type": "hash_chain", "payload": {"rounds": 1}, "timeout_seconds": 3601},
            "timeout_seconds",
        ),
    ],
)
async def test_a_bad_type_payload_or_timeout_is_400_naming_the_field(
    client: httpx.AsyncClient, publisher: RecordingPublisher, extra: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/tasks", json={**BASE, **extra})
    problem = assert_problem(response, 400)
    assert problem["type"] == "/problems/validation-error"
    assert field in [error["field"] for error in problem["errors"]], problem
    assert publisher.published == []


async def test_the_catalogue_lists_every_type_with_its_schema_and_limits(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/task-types")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["name"] for item in items] == list(CATALOGUE)
    by_name = {item["name"]: item for item in items}
    chain = by_name["hash_chain"]
    assert chain["payload_schema"]["required"] == ["rounds"]
    assert chain["payload_schema"]["properties"]["rounds"]["maximum"] == 500_000_000
    assert (chain["default_timeout_seconds"], chain["max_timeout_seconds"]) == (120, 3600)
    assert (chain["max_attempts"], chain["cpu_bound"]) == (3, True)
    # simulated has no attempts of its own: MAX_ATTEMPTS
    assert by_name["simulated"]["max_attempts"] == 5
    assert by_name["simulated"]["payload_schema"]["additionalProperties"] is False
