"""callback_url at submit (POST /api/tasks against the fakes): the SSRF guard's refusals are
400s naming the field, WEBHOOK_ALLOWED_HOSTS lets a listed host through (but never a
link-local or metadata address), and with WEBHOOK_SECRET unset every callback_url is refused."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from common.settings import load_settings
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit

TASK = {"title": "Resize images", "description": "thumbnails"}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@asynccontextmanager
async def api_with(
    **overrides: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemoryTaskRepository]]:
    """The real app on the fakes, with webhooks on and `overrides` in its settings."""
    settings = load_settings(**{"webhook_secret": new_secret(), **overrides})
    repository = InMemoryTaskRepository()
    app = create_app(settings, Backends(repository=repository, publisher=RecordingPublisher()))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client, repository


def callback_errors(response: httpx.Response) -> list[str]:
    """The messages of a 400's errors on callback_url (AssertionError for another answer)."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    assert problem["type"] == "/problems/validation-error"
    messages = [error["message"] for error in problem["errors"] if error["field"] == "callback_url"]
    assert messages, problem
    return messages


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hooks", "resolves to 127.0.0.1, a loopback address"),
        ("http://127.9.9.9/hooks", "a loopback address"),
        ("http://[::1]:8080/hooks", "resolves to ::1, a loopback address"),
        ("http://[::ffff:127.0.0.1]/hooks", "resolves to 127.0.0.1, a loopback address"),
        ("http://10.0.0.1/hooks", "resolves to 10.0.0.1, a private address"),
        ("http://192.168.1.1/hooks", "resolves to 192.168.1.1, a private address"),
        ("http://172.16.5.4/hooks", "a private address"),
        ("http://[fc00::1]/hooks", "a private address"),
        ("http://0.0.0.0:8080/hooks", "resolves to 0.0.0.0"),
        ("http://100.64.0.1/hooks", "which is not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local or metadata address"),
        ("http://[fe80::1]/hooks", "a link-local or metadata address"),
        ("http://100.100.100.200/hooks", "a link-local or metadata address"),
        ("http://localhost:8080/hooks", "resolves to 127.0.0.1, a loopback address"),
        # The resolver reads these as 127.0.0.1, and the guard checks what it resolved to.
        ("http://2130706433/hooks", "resolves to 127.0.0.1, a loopback address"),
        ("http://0x7f000001/hooks", "resolves to 127.0.0.1, a loopback address"),
        ("http://nowhere.invalid/hooks", "host 'nowhere.invalid' does not resolve"),
        ("ftp://8.8.8.8/hooks", "must be an http or https URL"),
        ("file:///etc/passwd", "must be an http or https URL"),
        ("hooks.example.com/tasks", "must be an http or https URL"),
        ("http://user:secret@8.8.8.8/hooks", "must not hold a user name or password"),
        ("http://user@8.8.8.8/hooks", "must not hold a user name or password"),
        ("http:///hooks", "must name a host"),
        ("http://8.8.8.8:99999/hooks", "is not a valid URL"),
        ("http://8.8.8.8/a b", "must not contain white space"),
    ],
)
async def test_a_callback_url_the_guard_refuses_is_a_400_naming_it(url: str, why: str) -> None:
    async with api_with() as (client, repository):
        response = await client.post("/api/tasks", json={**TASK, "callback_url": url})
    [message] = callback_errors(response)
    assert why in message, message
    assert repository.rows == {}


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/hooks", "https://[2001:4860:4860::8888]:8443/tasks?x=1"]
)
async def test_a_public_address_is_accepted_and_shown_pending(url: str) -> None:
    async with api_with() as (client, repository):
        response = await client.post("/api/tasks", json={**TASK, "callback_url": url})
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        shown = (await client.get(f"/api/tasks/{task_id}")).json()
    assert shown["callback"] == {
        "url": url,
        "state": "pending",
        "attempts": 0,
        "last_status_code": None,
        "last_error": None,
    }
    callback = repository.rows[task_id].callback
    assert callback is not None
    assert callback.url == url


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/hooks"),
        ("hooks.internal, 127.0.0.1", "http://127.0.0.1/hooks"),
        ("[::1]", "http://[::1]:8080/hooks"),
        ("LOCALHOST", "http://localhost:8080/hooks"),
        ("10.0.0.1", "http://10.0.0.1/hooks"),
    ],
)
async def test_a_host_in_the_allow_list_is_let_through(allowed: str, url: str) -> None:
    async with api_with(webhook_allowed_hosts=allowed) as (client, repository):
        response = await client.post("/api/tasks", json={**TASK, "callback_url": url})
    assert response.status_code == 202, response.text
    assert list(repository.rows) == [response.json()["task_id"]]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        # Listed by its address, asked for by a name that resolves to it: not the same host.
        ("http://localhost:8080/hooks", "resolves to 127.0.0.1, a loopback address"),
        ("http://127.0.0.2/hooks", "resolves to 127.0.0.2, a loopback address"),
        ("http://192.168.1.1/hooks", "a private address"),
    ],
)
async def test_the_allow_list_holds_exact_hosts_only(url: str, why: str) -> None:
    async with api_with(webhook_allowed_hosts="127.0.0.1") as (client, _):
        response = await client.post("/api/tasks", json={**TASK, "callback_url": url})
    [message] = callback_errors(response)
    assert why in message, message


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("169.254.169.254", "http://169.254.169.254/latest/meta-data/"),
        ("[fd00:ec2::254]", "http://[fd00:ec2::254]/latest/meta-data/"),
        ("[fe80::1]", "http://[fe80::1]/hooks"),
        ("[::ffff:169.254.169.254]", "http://[::ffff:169.254.169.254]/hooks"),
    ],
)
async def test_a_link_local_or_metadata_address_is_refused_even_when_listed(
    allowed: str, url: str
) -> None:
    async with api_with(webhook_allowed_hosts=allowed) as (client, repository):
        response = await client.post("/api/tasks", json={**TASK, "callback_url": url})
    [message] = callback_errors(response)
    assert "a link-local or metadata address" in message, message
    assert repository.rows == {}


async def test_with_webhooks_off_a_callback_url_is_a_400() -> None:
    async with api_with(webhook_secret=None, webhook_allowed_hosts="127.0.0.1") as (client, repo):
        refused = await client.post(
            "/api/tasks", json={**TASK, "callback_url": "http://127.0.0.1/hooks"}
        )
        without = await client.post("/api/tasks", json=TASK)
    [message] = callback_errors(refused)
    assert message == "webhooks are off on this server (WEBHOOK_SECRET is not set)"
    assert without.status_code == 202  # a task without one is as welcome as ever
    assert list(repo.rows) == [without.json()["task_id"]]


async def test_a_callback_url_too_long_or_not_a_string_is_a_400() -> None:
    async with api_with() as (client, _):
        long = await client.post(
            "/api/tasks", json={**TASK, "callback_url": "http://8.8.8.8/" + "a" * 2048}
        )
        number = await client.post("/api/tasks", json={**TASK, "callback_url": 5})
        empty = await client.post("/api/tasks", json={**TASK, "callback_url": ""})
    for response in (long, number, empty):
        assert callback_errors(response)
