"""GET /api/tasks/{id}, /health/live and /health/ready (and /health), unknown routes and the
OpenAPI document, against the fakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from test_submit import VALID, assert_problem

from common.errors import DatabaseUnavailable, SchemaOutdated
from common.settings import Settings
from common.tasks import NewTask, TaskRecord, TaskStatus
from main import create_app
from models.tasks import TaskPublic
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit

TASK_ID = "0b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f"


async def test_returns_the_task_with_iso_timestamps(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    await repository.create(NewTask(TASK_ID, "Resize", "thumbs", {"k": "v"}))

    response = await client.get(f"/api/tasks/{TASK_ID}")

    assert response.status_code == 200
    body = response.json()
    assert body["task_id"] == TASK_ID
    assert (body["title"], body["description"], body["metadata"]) == (
        "Resize",
        "thumbs",
        {"k": "v"},
    )
    assert body["status"] == "PENDING"
    assert body["completed_at"] is None
    for name in ("created_at", "updated_at"):
        assert body[name].endswith("+00:00")
        assert datetime.fromisoformat(body[name]).utcoffset() is not None


@pytest.mark.parametrize(
    "record",
    [
        TaskRecord.pending(NewTask(TASK_ID, "😀 t", "d", None), datetime(2026, 1, 2, tzinfo=UTC)),
        TaskRecord(
            task_id=TASK_ID,
            title="t",
            description=None,
            status=TaskStatus.FAILED,
            metadata={"n": [1, 2.5, None, {"x": "ü"}]},
            attempts=5,
            last_error="boom",
            created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            updated_at=datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
            completed_at=datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
            started_at=datetime(2026, 1, 2, 3, 4, 5, 500, tzinfo=UTC),
        ),
    ],
    ids=["pending", "every-field-set"],
)
def test_the_read_json_is_the_documented_models_json(record: TaskRecord) -> None:
    fields: dict[str, Any] = {name: getattr(record, name, None) for name in TaskPublic.model_fields}
    fields["events_url"] = f"/api/tasks/{record.task_id}/events"
    expected = json.loads(TaskPublic(**fields).model_dump_json())
    assert json.loads(TaskPublic.json_of(record)) == expected


async def test_completed_task_shows_completed_at(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    await repository.create(NewTask(TASK_ID, "t", "d", None))
    await repository.claim(TASK_ID, lease_seconds=60, steal=False)
    await repository.complete(TASK_ID)

    body = (await client.get(f"/api/tasks/{TASK_ID}")).json()

    assert body["status"] == "COMPLETED"
    assert datetime.fromisoformat(body["completed_at"]).utcoffset() is not None


async def test_upper_case_id_finds_the_task(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    await repository.create(NewTask(TASK_ID, "t", "d", None))
    response = await client.get(f"/api/tasks/{TASK_ID.upper()}")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "task_id",
    [
        "1b9f5a3c-2f4e-4d0a-9d6b-8f1f2c3d4e5f",
        "not-a-uuid",
        "x" * 300,
        "0b9f5a3c2f4e4d0a9d6b8f1f2c3d4e5f",
        "%00",
        "'; DROP TABLE tasks; --",
    ],
)
async def test_unknown_or_malformed_id_is_404(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, task_id: str
) -> None:
    await repository.create(NewTask(TASK_ID, "t", "d", None))
    problem = assert_problem(await client.get(f"/api/tasks/{task_id}"), 404)
    assert problem["detail"].startswith("task ")


async def test_read_with_database_down_is_503(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    repository.fail_with_unavailable()
    response = await client.get(f"/api/tasks/{TASK_ID}")
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "7"


async def test_unknown_route_is_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/nothing-here"), 404)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", f"/api/tasks/{TASK_ID}", "GET"),
        ("PUT", "/api/tasks", "GET, POST"),
        ("DELETE", "/api/tasks", "GET, POST"),
        ("GET", f"/api/tasks/{TASK_ID}/cancel", "POST"),
    ],
)
async def test_wrong_method_is_405_problem_naming_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert_problem(response, 405)
    assert response.headers["allow"] == allow


# /health is the name /health/ready had before there was a /health/live: the same answers.
READY_PATHS = ["/health/ready", "/health"]


@pytest.mark.parametrize("path", READY_PATHS)
async def test_ready_when_every_part_is(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "schema": "ok"},
    }


@pytest.mark.parametrize("path", READY_PATHS)
async def test_ready_names_the_database_when_it_is_down(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, path: str
) -> None:
    repository.fail_with_unavailable()
    problem = assert_problem(await client.get(path), 503)
    assert problem["type"] == "/problems/service-unavailable"
    assert problem["checks"] == {"database": "unavailable", "broker": "ok", "schema": "ok"}
    assert problem["detail"] == "not ready: database unavailable"


@pytest.mark.parametrize("path", READY_PATHS)
async def test_ready_names_the_broker_when_it_is_down(
    client: httpx.AsyncClient, publisher: RecordingPublisher, path: str
) -> None:
    publisher.is_open = False
    problem = assert_problem(await client.get(path), 503)
    assert problem["checks"] == {"database": "ok", "broker": "unavailable", "schema": "ok"}
    assert problem["detail"] == "not ready: broker unavailable"


@pytest.mark.parametrize(
    ("failure", "state"),
    [
        (SchemaOutdated("the database schema is at revision 0001"), "outdated"),
        (DatabaseUnavailable("the revision could not be read"), "unknown"),
    ],
)
async def test_ready_names_the_schema_unless_it_is_at_the_expected_revision(
    settings: Settings,
    repository: InMemoryTaskRepository,
    publisher: RecordingPublisher,
    failure: Exception,
    state: str,
) -> None:
    async def require_schema() -> None:
        raise failure

    backends = Backends(repository=repository, publisher=publisher, require_schema=require_schema)
    transport = httpx.ASGITransport(app=create_app(settings, backends))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path in READY_PATHS:
            problem = assert_problem(await client.get(path), 503)
            assert problem["checks"] == {"database": "ok", "broker": "ok", "schema": state}
            assert problem["detail"] == f"not ready: schema {state}"
        assert (await client.get("/health/live")).status_code == 200


async def test_live_asks_no_backend(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    repository.fail_with_unavailable()
    publisher.is_open = False
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert "ping" not in repository.calls


async def test_openapi_documents_examples_and_problem_answers(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()

    post = document["paths"]["/api/tasks"]["post"]
    request_schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["$ref"].endswith("/TaskCreate")
    assert document["components"]["schemas"]["TaskCreate"]["examples"][0].keys() == VALID.keys()
    for status in ("400", "413", "415", "500", "503"):
        content = post["responses"][status]["content"]["application/problem+json"]
        assert content["example"]["status"] == int(status)
        assert content["schema"]["$ref"] == "#/components/schemas/Problem"
    get = document["paths"]["/api/tasks/{task_id}"]["get"]
    assert "404" in get["responses"]
    assert "examples" in document["components"]["schemas"]["TaskPublic"]
    assert "Problem" in document["components"]["schemas"]
    # Bad input is a 400 here, never FastAPI's 422, and the document says so: the only
    # 422 is a reused Idempotency-Key, a problem like the others.
    assert (
        post["responses"]["422"]["content"]["application/problem+json"]["example"]["status"] == 422
    )
    with_422 = [path for path, ops in document["paths"].items() if '"422"' in json.dumps(ops)]
    assert with_422 == ["/api/tasks"]
    assert "HTTPValidationError" not in document["components"]["schemas"]


async def test_swagger_ui_is_served(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()
