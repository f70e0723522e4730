"""The headers every answer carries (nosniff; no-store on the task resources; no server
header from uvicorn) and CORS: off by default, on for the origins CORS_ORIGINS lists,
outside the API keys so that a preflight needs none."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from test_submit import VALID

import main
from common.api_keys import new_api_key
from common.errors import ConfigurationError
from common.settings import load_settings
from common.tasks import NewTask
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.serving import served

pytestmark = pytest.mark.unit

APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"
KEY, PAIR = new_api_key("web")
PREFLIGHT = {
    "Origin": APP_ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type, idempotency-key,"
    " last-event-id, traceparent, tracestate, x-request-id",
}
EXPOSED = "Location, Retry-After, Idempotent-Replayed, X-Request-ID, RateLimit, RateLimit-Policy"


def app_with(repository: InMemoryTaskRepository | None = None, **settings: object) -> FastAPI:
    backends = Backends(repository or InMemoryTaskRepository(), RecordingPublisher())
    return create_app(load_settings(**settings), backends)


def client_of(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


@pytest.fixture
async def cors() -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(app_with(cors_origins=f"{APP_ORIGIN}, https://admin.example.com")) as c:
        yield c


@pytest.fixture
async def final_task(repository: InMemoryTaskRepository) -> str:
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None))
    await repository.claim(record.task_id, lease_seconds=60, steal=False)
    await repository.complete(record.task_id)  # final: its event stream ends at once
    return record.task_id


async def test_every_answer_says_nosniff(client: httpx.AsyncClient, final_task: str) -> None:
    answers = [
        await client.get("/health/live"),
        await client.get("/docs"),
        await client.get("/openapi.json"),
        await client.get("/metrics"),
        await client.get("/api/task-types"),
        await client.get("/no/such/path"),
        await client.get(f"/api/tasks/{final_task}"),
        await client.get(f"/api/tasks/{final_task}/events"),
        await client.post("/api/tasks", json=VALID),
        await client.post("/api/tasks", json={"title": ""}),
    ]
    for answer in answers:
        assert answer.headers.get_list("x-content-type-options") == ["nosniff"], answer.url


async def test_task_resources_are_no_store_problems_included(
    client: httpx.AsyncClient, final_task: str
) -> None:
    accepted = await client.post("/api/tasks", json=VALID)
    assert accepted.status_code == 202
    answers = {
        "202": accepted,
        "list": await client.get("/api/tasks"),
        "stats": await client.get("/api/tasks/stats"),
        "task": await client.get(f"/api/tasks/{final_task}"),
        "cancel-409": await client.post(f"/api/tasks/{final_task}/cancel"),
        "400": await client.post("/api/tasks", json={"title": ""}),
        "404": await client.get(f"/api/tasks/{uuid.uuid4()}"),
        "405": await client.delete("/api/tasks"),
        "413": await client.post("/api/tasks", json={**VALID, "description": "d" * 200_000}),
    }
    assert answers["404"].status_code == 404
    assert answers["413"].status_code == 413
    for name, answer in answers.items():
        assert answer.headers.get_list("cache-control") == ["no-store"], name


async def test_other_paths_get_no_cache_control_from_us(client: httpx.AsyncClient) -> None:
    for path in ("/api/task-types", "/health/live", "/api/tasksx", "/openapi.json"):
        answer = await client.get(path)
        assert "no-store" not in answer.headers.get("cache-control", ""), path


async def test_the_event_stream_keeps_its_no_cache(
    client: httpx.AsyncClient, final_task: str
) -> None:
    stream = await client.get(f"/api/tasks/{final_task}/events")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers.get_list("cache-control") == ["no-cache"]


async def test_a_500_carries_the_headers_too(
    client: httpx.AsyncClient, repository: InMemoryTaskRepository
) -> None:
    repository.failure = RuntimeError("boom")
    answer = await client.post("/api/tasks", json=VALID)
    assert answer.status_code == 500
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"


async def test_uvicorn_runs_without_a_server_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """The options _serve gives uvicorn, then a real uvicorn with them: no server header (nor
    its version), and the Date header uvicorn adds by default."""
    given: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: given.update(options))
    app = app_with()
    main._serve(load_settings(), app)
    assert given["server_header"] is False
    assert "date_header" not in given

    async with served(app, **given) as base_url, httpx.AsyncClient(base_url=base_url) as real:
        answer = await real.get("/health/live")
    assert answer.status_code == 200
    assert "server" not in answer.headers
    assert answer.headers["date"].endswith(" GMT")
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_cors_is_off_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/api/tasks", headers=PREFLIGHT)
    simple = await client.get("/api/tasks", headers={"Origin": APP_ORIGIN})
    assert simple.status_code == 200
    for answer in (preflight, simple):
        cors = [name for name in answer.headers if name.startswith("access-control-")]
        assert cors == [], answer.request.method


async def test_a_preflight_from_a_listed_origin_is_allowed(cors: httpx.AsyncClient) -> None:
    answer = await cors.options("/api/tasks", headers=PREFLIGHT)
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    assert answer.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
    allowed = {h.strip() for h in answer.headers["access-control-allow-headers"].split(",")}
    requested = {h.strip() for h in PREFLIGHT["Access-Control-Request-Headers"].split(",")}
    assert requested <= {h.lower() for h in allowed}
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"


async def test_a_listed_origin_reads_the_answer_and_its_exposed_headers(
    cors: httpx.AsyncClient,
) -> None:
    for origin in (APP_ORIGIN, "https://admin.example.com"):
        answer = await cors.post("/api/tasks", json=VALID, headers={"Origin": origin})
        assert answer.status_code == 202
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["access-control-expose-headers"] == EXPOSED
        assert "Origin" in answer.headers["vary"]
        assert "access-control-allow-credentials" not in answer.headers


async def test_another_origin_gets_no_allow_origin(cors: httpx.AsyncClient) -> None:
    other = {**PREFLIGHT, "Origin": OTHER_ORIGIN}
    preflight = await cors.options("/api/tasks", headers=other)
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    simple = await cors.get("/api/tasks", headers={"Origin": OTHER_ORIGIN})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    # Not allowed either: a method or a header outside the lists.
    put = await cors.options(
        "/api/tasks", headers={**PREFLIGHT, "Access-Control-Request-Method": "PUT"}
    )
    assert put.status_code == 400
    odd = {**PREFLIGHT, "Access-Control-Request-Headers": "x-custom"}
    assert (await cors.options("/api/tasks", headers=odd)).status_code == 400


async def test_a_preflight_needs_no_key_with_keys_on(repository: InMemoryTaskRepository) -> None:
    app = app_with(repository, api_keys=PAIR, cors_origins=APP_ORIGIN)
    async with client_of(app) as keyed:
        preflight = await keyed.options("/api/tasks", headers=PREFLIGHT)
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
        # The page can read a 401 too, and its answer once it sends the key.
        refused = await keyed.get("/api/tasks", headers={"Origin": APP_ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == APP_ORIGIN
        let_in = await keyed.get(
            "/api/tasks", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {KEY}"}
        )
        assert let_in.status_code == 200
        assert let_in.headers["access-control-allow-origin"] == APP_ORIGIN
        # An OPTIONS that is no preflight still meets the door.
        bare = await keyed.options("/api/tasks")
        assert bare.status_code == 401


def test_cors_origins_parse_to_exact_lower_case_origins() -> None:
    settings = load_settings(cors_origins=" https://App.Example.com ,http://localhost:3000,")
    assert settings.cors_allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert load_settings(cors_origins="http://[::1]:8080").cors_allowed_origins == (
        "http://[::1]:8080",
    )
    assert load_settings().cors_allowed_origins == ()


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("*", "* (any site at all) is not allowed"),
        (f"{APP_ORIGIN}, *", "* (any site at all) is not allowed"),
        (f"{APP_ORIGIN}/", "is not an origin"),
        (f"{APP_ORIGIN}/app", "is not an origin"),
        ("app.example.com", "is not an origin"),
        ("ftp://app.example.com", "is not an origin"),
        ("https://*.example.com", "is not an origin"),
        ("null", "is not an origin"),
    ],
)
def test_bad_cors_origins_are_refused_naming_the_variable(value: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match="CORS_ORIGINS") as caught:
        load_settings(cors_origins=value)
    assert complaint in str(caught.value)
