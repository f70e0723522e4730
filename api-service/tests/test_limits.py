"""MAX_METADATA_BYTES: `metadata` and `payload` of POST /api/tasks each bounded by the bytes
of their compact JSON (a 400 naming the field), and payload nested no deeper than metadata."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.types import Message
from test_submit import assert_problem, nested

from api.deps import SubmitRules, task_create_body
from common.errors import ConfigurationError
from common.settings import load_settings
from main import create_app
from models.tasks import MAX_METADATA_DEPTH
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit

LIMIT = 16_384  # the default
TOO_LARGE = f"must be at most MAX_METADATA_BYTES ({LIMIT:,}) bytes as compact JSON"


def sized(total: int, char: str = "x") -> dict[str, Any]:
    """An object whose compact JSON is `total` bytes: {"k":"xxx..."}."""
    filler = total - len(b'{"k":""}')
    width = len(char.encode())
    assert filler % width == 0
    value = {"k": char * (filler // width)}
    assert len(orjson.dumps(value)) == total
    return value


def body_with(**fields: object) -> dict[str, object]:
    return {"title": "t", "description": "d", **fields}


async def test_metadata_up_to_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    for metadata in (sized(LIMIT), sized(LIMIT, "é")):  # bytes, not characters
        response = await client.post("/api/tasks", json=body_with(metadata=metadata))
        assert response.status_code == 202, response.text
    # What counts is the compact JSON, not the spaces the client sent around it.
    pretty = orjson.dumps(body_with(metadata=sized(LIMIT)), option=orjson.OPT_INDENT_2)
    response = await client.post(
        "/api/tasks", content=pretty, headers={"content-type": "application/json"}
    )
    assert response.status_code == 202, response.text


@pytest.mark.parametrize("char", ["x", "é"])
async def test_metadata_one_byte_over_is_a_400_naming_it(
    client: httpx.AsyncClient, publisher: RecordingPublisher, char: str
) -> None:
    over = sized(LIMIT + len(char.encode()), char)  # the smallest step over
    response = await client.post("/api/tasks", json=body_with(metadata=over))
    problem = assert_problem(response, 400)
    assert problem["type"] == "/problems/validation-error"
    assert problem["errors"] == [{"field": "metadata", "message": TOO_LARGE, "type": "value_error"}]
    assert problem["detail"] == f"The request is invalid: metadata: {TOO_LARGE}"
    assert publisher.published == []


async def test_payload_is_bounded_by_the_same_limit(
    client: httpx.AsyncClient, publisher: RecordingPublisher
) -> None:
    over = await client.post(
        "/api/tasks", json=body_with(type="hash_chain", payload=sized(LIMIT + 1))
    )
    problem = assert_problem(over, 400)
    assert problem["errors"] == [{"field": "payload", "message": TOO_LARGE, "type": "value_error"}]
    # At the limit, the size passes and the type's own model speaks (it has no field "k").
    at = await client.post("/api/tasks", json=body_with(type="hash_chain", payload=sized(LIMIT)))
    fields = [error["field"] for error in assert_problem(at, 400)["errors"]]
    assert "payload" not in fields
    assert "payload.k" in fields
    assert publisher.published == []


async def test_both_over_the_limit_name_both(client: httpx.AsyncClient) -> None:
    body = body_with(metadata=sized(LIMIT + 1), payload=sized(LIMIT + 1))
    problem = assert_problem(await client.post("/api/tasks", json=body), 400)
    assert [error["field"] for error in problem["errors"]] == ["metadata", "payload"]


async def test_payload_is_nested_no_deeper_than_metadata(client: httpx.AsyncClient) -> None:
    too_deep = await client.post(
        "/api/tasks", json=body_with(payload=nested(MAX_METADATA_DEPTH + 1))
    )
    problem = assert_problem(too_deep, 400)
    assert problem["errors"] == [
        {
            "field": "payload",
            "message": f"must be nested at most {MAX_METADATA_DEPTH} levels deep",
            "type": "value_error",
        }
    ]
    deep_enough = await client.post(
        "/api/tasks", json=body_with(payload=nested(MAX_METADATA_DEPTH))
    )
    fields = [error["field"] for error in assert_problem(deep_enough, 400)["errors"]]
    assert fields == ["payload.a"]  # only the type's model: simulated takes no fields


def json_request(body: object) -> Request:
    content = orjson.dumps(body)

    async def receive() -> Message:
        return {"type": "http.request", "body": content, "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/tasks",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    return Request(scope, receive)


async def test_the_setting_is_what_task_create_body_checks() -> None:
    rules = SubmitRules.of(load_settings(max_metadata_bytes=256))
    assert rules.max_metadata_bytes == 256
    typed = await task_create_body(json_request(body_with(metadata=sized(256))), rules)
    assert typed.body.metadata == sized(256)
    for field in ("metadata", "payload"):
        with pytest.raises(RequestValidationError) as caught:
            await task_create_body(json_request(body_with(**{field: sized(257)})), rules)
        [error] = caught.value.errors()
        assert error["loc"] == ("body", field)
        assert error["msg"].endswith("MAX_METADATA_BYTES (256) bytes as compact JSON")


async def test_a_larger_limit_leaves_the_key_bound_to_speak() -> None:
    rules = SubmitRules.of(load_settings(max_metadata_bytes=1_000_000))
    longest = {"k" * 65_535: 1}
    typed = await task_create_body(json_request(body_with(metadata=longest)), rules)
    assert typed.body.metadata == longest
    with pytest.raises(RequestValidationError) as caught:
        await task_create_body(json_request(body_with(metadata={"k" * 65_536: 1})), rules)
    [error] = caught.value.errors()
    assert "object keys of at most 65,535 bytes" in error["msg"]


def test_max_metadata_bytes_has_a_floor() -> None:
    assert load_settings().max_metadata_bytes == LIMIT
    assert SubmitRules.of(load_settings()).max_metadata_bytes == LIMIT
    assert load_settings(max_metadata_bytes=256).max_metadata_bytes == 256
    with pytest.raises(ConfigurationError, match="MAX_METADATA_BYTES"):
        load_settings(max_metadata_bytes=255)


def small_limit_app() -> FastAPI:
    settings = load_settings(max_metadata_bytes=256)
    return create_app(settings, Backends(InMemoryTaskRepository(), RecordingPublisher()))


async def test_the_app_applies_a_configured_limit() -> None:
    transport = httpx.ASGITransport(app=small_limit_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.post("/api/tasks", json=body_with(metadata=sized(257)))
    assert response.status_code == 400
