"""API keys (API_KEYS): every endpoint of the app x no key / a wrong key / a right key, the
open paths (health always; docs and metrics unless DOCS_PUBLIC / METRICS_PUBLIC say false),
the 401 problem and its challenge, and the keys' own parsing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from common.api_keys import new_api_key, parse_api_keys, tenant_of_key
from common.errors import ConfigurationError
from common.settings import load_settings
from common.tasks import NewTask
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher
from testkit.serving import served

pytestmark = pytest.mark.unit

ALICE_KEY, ALICE = new_api_key("alice")
BOB_KEY, BOB = new_api_key("bob.example-2")
WRONG_KEY, _ = new_api_key("alice")  # a well-made key that no pair admits
OPEN_PATHS = {"/health", "/health/live", "/health/ready"}
DOCS_PATHS = {"/docs", "/openapi.json"}
SWAGGER_ASSET = "/docs/assets/swagger-ui.css"
# The dashboard's pages hold no data (its script reads the API with the key): always open.
DASHBOARD_PATHS = {"/", "/dashboard"}
DASHBOARD = "/dashboard/"
ENDLESS_STREAMS = {"/api/events"}


def keyed_app(repository: InMemoryTaskRepository, **settings: object) -> FastAPI:
    keyed = load_settings(api_keys=f"{ALICE}, {BOB}", **settings)
    return create_app(keyed, Backends(repository=repository, publisher=RecordingPublisher()))


@pytest.fixture
async def task_id(repository: InMemoryTaskRepository) -> str:
    record = await repository.create(NewTask(str(uuid.uuid4()), "t", "d", None))
    await repository.claim(record.task_id, lease_seconds=60, steal=False)
    await repository.complete(record.task_id)  # final: its event stream ends at once
    return record.task_id


@pytest.fixture
async def keyed(repository: InMemoryTaskRepository) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(keyed_app(repository)) as client:
        yield client


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


def endpoints(app: FastAPI, task_id: str) -> list[tuple[str, str]]:
    """(method, path) of every route the app has, its path parameters filled in: a new
    route is in this table without anyone adding it."""
    found: list[tuple[str, str]] = []
    routes = list(app.routes)
    while routes:
        route = routes.pop(0)
        included = getattr(route, "original_router", None)  # an included router's routes
        if included is not None:
            routes.extend(included.routes)
            continue
        methods = getattr(route, "methods", None)
        if methods is None:
            continue
        template: str = getattr(route, "path")  # noqa: B009 (BaseRoute declares no path)
        path = template.replace("{task_id}", task_id)
        found.extend((method, path) for method in sorted(methods) if method != "HEAD")
    return found


async def call(
    client: httpx.AsyncClient, method: str, path: str, key: str | None
) -> httpx.Response:
    """The answer, its body read unless it is an event stream (which may never end)."""
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    body = {"title": "t", "description": "d"} if method == "POST" and path == "/api/tasks" else None
    async with client.stream(method, path, headers=headers, json=body) as answer:
        if not answer.headers.get("content-type", "").startswith("text/event-stream"):
            await answer.aread()
        return answer


async def test_every_endpoint_but_health_needs_a_key_when_keys_are_on(
    repository: InMemoryTaskRepository, task_id: str
) -> None:
    app = keyed_app(repository, docs_public=False, metrics_public=False)
    table = endpoints(app, task_id)
    assert {path for _, path in table} >= {
        "/api/tasks",
        f"/api/tasks/{task_id}",
        f"/api/tasks/{task_id}/cancel",
        f"/api/tasks/{task_id}/retry",
        f"/api/tasks/{task_id}/events",
        "/api/tasks/stats",
        "/api/task-types",
        "/metrics",
        *DOCS_PATHS,
        *OPEN_PATHS,
        *DASHBOARD_PATHS,
        f"/dashboard/tasks/{task_id}",
    }
    # The tenant-wide event stream never ends, and ASGITransport answers only once the app has
    # finished: with a right key, that one is asked of a real server.
    async with (
        _client(app) as client,
        served(app) as base_url,
        httpx.AsyncClient(base_url=base_url) as served_client,
    ):
        for method, path in table:
            open_path = path in OPEN_PATHS or path in DASHBOARD_PATHS or path.startswith(DASHBOARD)
            for key in (None, WRONG_KEY, "", "x" * 5000):
                answer = await call(client, method, path, key)
                if open_path:
                    assert answer.status_code != 401, (method, path)
                    continue
                assert answer.status_code == 401, (method, path, key)
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["www-authenticate"].startswith("Bearer ")
                assert answer.json()["status"] == 401
            for key in (ALICE_KEY, BOB_KEY):
                endless = path in ENDLESS_STREAMS
                answer = await call(served_client if endless else client, method, path, key)
                assert answer.status_code not in (401, 500), (method, path, answer.text)
        # The docs' own files (a mount, not a route) are behind the key with the docs.
        assert (await client.get(SWAGGER_ASSET)).status_code == 401
        answer = await client.get(SWAGGER_ASSET, headers={"Authorization": f"Bearer {ALICE_KEY}"})
        assert answer.status_code == 200


async def test_the_challenge_says_whether_a_key_was_sent(keyed: httpx.AsyncClient) -> None:
    missing = await keyed.get("/api/tasks")
    assert missing.headers["www-authenticate"] == 'Bearer realm="task-service"'
    assert missing.json()["type"] == "/problems/unauthorized"
    for header in (f"Bearer {WRONG_KEY}", f"bearer {ALICE_KEY}x", "Bearer  "):
        answer = await keyed.get("/api/tasks", headers={"Authorization": header})
        assert answer.status_code == 401
    wrong = await keyed.get("/api/tasks", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    assert wrong.headers["www-authenticate"] == 'Bearer realm="task-service", error="invalid_token"'
    # Another scheme is no key at all; the scheme's case does not matter.
    basic = await keyed.get("/api/tasks", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert basic.headers["www-authenticate"] == 'Bearer realm="task-service"'
    lower = await keyed.get("/api/tasks", headers={"Authorization": f"bearer {ALICE_KEY}"})
    assert lower.status_code == 200


async def test_a_request_without_a_key_is_answered_before_its_body_is_read(
    keyed: httpx.AsyncClient,
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"x" * 65536
            raise AssertionError("the body was read past its first chunk")

    answer = await keyed.post("/api/tasks", content=endless())
    assert answer.status_code == 401


async def test_docs_and_metrics_are_open_by_default_with_keys_on(
    keyed: httpx.AsyncClient,
) -> None:
    for path in ("/docs", "/openapi.json", SWAGGER_ASSET, "/metrics", "/health/live"):
        assert (await keyed.get(path)).status_code == 200, path
    assert (await keyed.get("/api/task-types")).status_code == 401


async def test_with_no_keys_everything_is_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/tasks")).status_code == 200
    answer = await client.get("/api/tasks", headers={"Authorization": f"Bearer {WRONG_KEY}"})
    assert answer.status_code == 200  # keys are off: a key sent is not even read


def test_the_document_lists_the_key_on_every_api_operation(keyed: httpx.AsyncClient) -> None:
    app = create_app(load_settings(), Backends(InMemoryTaskRepository(), RecordingPublisher()))
    document = app.openapi()
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for operation in operations.values():
            if path.startswith("/api/"):
                assert operation["security"] == [{"apiKey": []}, {}], path
                assert "401" in operation["responses"], path
            else:
                assert "security" not in operation, path


def test_api_keys_parse_and_match() -> None:
    keys = parse_api_keys(f" {ALICE} ,{BOB},")
    assert list(keys) == ["alice", "bob.example-2"]
    assert tenant_of_key(keys, ALICE_KEY) == "alice"
    assert tenant_of_key(keys, BOB_KEY) == "bob.example-2"
    assert tenant_of_key(keys, WRONG_KEY) is None
    assert tenant_of_key(keys, "") is None
    assert tenant_of_key({}, ALICE_KEY) is None
    assert parse_api_keys("") == {}


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("alice", "name:sha256-hex"),
        (":" + "a" * 64, "name:sha256-hex"),
        ("a" * 65 + ":" + "a" * 64, "name:sha256-hex"),
        ("al ice:" + "a" * 64, "name:sha256-hex"),
        ("alice:" + "A" * 64, "64 lower-case hex"),
        ("alice:" + "a" * 63, "64 lower-case hex"),
        ("alice:" + ALICE_KEY, "never the key itself"),
        (f"{ALICE},{ALICE}", "given twice"),
        (f"{ALICE},carol:{ALICE.split(':')[1]}", "the same key as another name"),
    ],
)
def test_bad_api_keys_are_refused_naming_the_variable(value: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match="API_KEYS") as caught:
        load_settings(api_keys=value)
    assert complaint in str(caught.value)
    assert ALICE_KEY not in str(caught.value)


def test_make_api_key_prints_a_key_its_pair_admits() -> None:
    key, pair = new_api_key("ops_team")
    assert key.startswith("tsk_")
    assert len(key) == 47
    assert tenant_of_key(parse_api_keys(pair), key) == "ops_team"
    assert new_api_key("ops_team")[0] != key
    with pytest.raises(ValueError, match="NAME"):
        new_api_key("no spaces")


def test_an_open_api_says_so_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    backends = Backends(InMemoryTaskRepository(), RecordingPublisher())
    with caplog.at_level(logging.WARNING, logger="api.auth"):
        create_app(load_settings(), backends)
        create_app(load_settings(api_keys=ALICE), backends)
    [warning] = [record for record in caplog.records if record.name == "api.auth"]
    assert "API_KEYS is empty" in warning.getMessage()
