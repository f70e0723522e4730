"""POST /api/tasks against the fakes: validation, the happy path, and its failure paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.tasks import TaskStatus
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit

VALID = {"title": "Resize images", "description": "thumbnails", "metadata": {"album": 42}}


def nested(levels: int) -> dict[str, Any]:
    """An object `levels` objects deep."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "status", "detail"} <= body.keys()
    return body


async def test_accepts_a_task_stores_it_and_publishes_it(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    response = await client.post("/api/tasks", json=VALID)

    assert response.status_code == 202
    body = response.json()
    task_id = body["task_id"]
    assert body["status"] == "PENDING"
    assert task_id in body["message"]
    assert response.headers["location"] == f"/api/tasks/{task_id}"
    assert repository.rows[task_id].status is TaskStatus.PENDING
    assert repository.rows[task_id].metadata == {"album": 42}
    [message] = publisher.published
    assert (message.task_id, message.title, message.description, message.metadata) == (
        task_id,
        "Resize images",
        "thumbnails",
        {"album": 42},
    )
    # The row is written before the message goes out, so a worker always finds it.
    assert repository.calls == ["create", "mark_dispatched"]


async def test_each_task_gets_its_own_uuid4(client: httpx.AsyncClient) -> None:
    ids = {(await client.post("/api/tasks", json=VALID)).json()["task_id"] for _ in range(5)}
    assert len(ids) == 5
    assert all(len(task_id) == 36 and task_id[14] == "4" for task_id in ids)


@pytest.mark.parametrize(
    "body",
    [
        {"title": "t" * 255, "description": "d"},
        {"title": "😀 emoji", "description": "ü" * 10, "metadata": None},
        {"title": "t", "description": "d" * 65536},
        {"title": "t", "description": "d", "metadata": {"nested": {"list": [1, None, "x"]}}},
        {"title": "t", "description": "d", "metadata": nested(30)},
    ],
    ids=[
        "title-255",
        "unicode-null-metadata",
        "description-64KiB",
        "nested-metadata",
        "metadata-30-deep",
    ],
)
async def test_accepts_every_valid_shape(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/api/tasks", json=body)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "d"}, "title"),
        ({"title": "", "description": "d"}, "title"),
        ({"title": "   \t", "description": "d"}, "title"),
        ({"title": "t" * 256, "description": "d"}, "title"),
        ({"title": 123, "description": "d"}, "title"),
        ({"title": ["t"], "description": "d"}, "title"),
        ({"title": "t"}, "description"),
        ({"title": "t", "description": " \n"}, "description"),
        ({"title": "t", "description": 5}, "description"),
        ({"title": "t", "description": None}, "description"),
        ({"title": "t", "description": "é" * 32769}, "description"),
        ({"title": "t", "description": "d", "metadata": [1, 2]}, "metadata"),
        ({"title": "t", "description": "d", "metadata": "x"}, "metadata"),
        ({"title": "t", "description": "d", "extra": 1}, "extra"),
        ({"title": "t", "description": "d", "metadata": {"n": 2**64}}, "metadata"),
        ({"title": "t", "description": "d", "metadata": nested(31)}, "metadata"),
        ({"title": "t", "description": "d", "metadata": {"a": [[nested(29)]]}}, "metadata"),
        ({"title": "t", "description": "d", "metadata": {"é" * 32_768: 1}}, "metadata"),
        (["title", "description"], "body"),
        ("just a string", "body"),
    ],
)
async def test_rejects_bad_input_with_400_naming_the_field(
    client: httpx.AsyncClient,
    publisher: RecordingPublisher,
    body: object,
    field: str,
) -> None:
    response = await client.post("/api/tasks", json=body)

    problem = assert_problem(response, 400)
    assert problem["type"] == "/problems/validation-error"
    assert field in [error["field"] for error in problem["errors"]]
    assert all(error["message"] for error in problem["errors"])
    assert publisher.published == []


async def test_numbers_json_allows_but_storage_does_not_are_400(
    client: httpx.AsyncClient,
) -> None:
    for number in (b"1e400", b"-1e400", b"123456789012345678901234567890"):
        content = b'{"title": "t", "description": "d", "metadata": {"n": %s}}' % number
        response = await client.post(
            "/api/tasks", content=content, headers={"content-type": "application/json"}
        )
        problem = assert_problem(response, 400)
        assert [error["field"] for error in problem["errors"]] == ["metadata"], number


@pytest.mark.parametrize("content", [b"{bad json", b"", b"null"])
async def test_malformed_or_missing_json_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(
        "/api/tasks", content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_content_type_is_415(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/api/tasks", content=b'{"title":"t"}', headers=headers)
    assert_problem(response, 415)


async def test_json_with_charset_and_vendor_types_are_accepted(client: httpx.AsyncClient) -> None:
    for content_type in ["application/json; charset=utf-8", "application/vnd.tasks+json"]:
        response = await client.post(
            "/api/tasks",
            content=b'{"title":"t","description":"d"}',
            headers={"content-type": content_type},
        )
        assert response.status_code == 202, content_type


async def test_body_over_the_limit_is_413_by_content_length(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    body = {"title": "t", "description": "d" * 100_000}  # the fixture's limit is 100,000 bytes
    response = await client.post("/api/tasks", json=body)
    assert_problem(response, 413)
    assert publisher.published == []


async def test_chunked_body_over_the_limit_is_413_while_streaming(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"title": "t", "description": "'
        for _ in range(101):
            yield b"d" * 1000
        yield b'"}'

    response = await client.post(
        "/api/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert publisher.published == []


async def test_database_down_is_503_with_retry_after(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    repository.fail_with_unavailable()
    response = await client.post("/api/tasks", json=VALID)
    problem = assert_problem(response, 503)
    assert response.headers["retry-after"] == "7"
    assert "database" in problem["detail"]
    assert publisher.published == []


async def test_unconfirmed_publish_still_accepts_and_leaves_the_task_to_the_dispatcher(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    publisher.fail = True
    response = await client.post("/api/tasks", json=VALID)

    assert response.status_code == 202
    task_id = response.json()["task_id"]
    assert repository.rows[task_id].status is TaskStatus.PENDING
    assert task_id not in repository.dispatched  # the outbox mark is still unset


async def test_broker_known_down_is_not_even_tried(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository, publisher: RecordingPublisher
) -> None:
    publisher.is_open = False
    response = await client.post("/api/tasks", json=VALID)
    assert response.status_code == 202
    assert publisher.published == []
    assert repository.dispatched == set()


async def test_confirmed_publish_sets_the_outbox_mark(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    task_id = (await client.post("/api/tasks", json=VALID)).json()["task_id"]
    assert task_id in repository.dispatched
    assert repository.calls == ["create", "mark_dispatched"]


async def test_unexpected_error_is_a_500_problem_without_internals(
    client: httpx.AsyncClient,
    repository: InMemoryTaskRepository,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repository.failure = RuntimeError("secret connection string mysql://root:pw@db")
    response = await client.post("/api/tasks", json=VALID)
    problem = assert_problem(response, 500)
    assert "secret" not in response.text
    assert problem["detail"] == "An unexpected error occurred."
    [record] = [r for r in caplog.records if r.getMessage() == "unhandled error"]
    assert record.exc_info is not None
