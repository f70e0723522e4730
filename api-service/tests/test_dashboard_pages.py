"""The dashboard's pages as the API serves them (the browser tests in tests/browser drive them
in Chromium): open without a key, made only of the service's own files, under a
Content-Security-Policy that runs no other script, and escaping what the URL carries."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from fastapi import FastAPI

from api.dashboard import CONTENT_SECURITY_POLICY
from common.api_keys import new_api_key
from common.settings import load_settings
from common.task_types import CATALOGUE
from main import create_app
from services.backends import Backends
from testkit.fakes import InMemoryTaskRepository, RecordingPublisher

pytestmark = pytest.mark.unit

_LOADED = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


async def test_the_root_goes_to_the_dashboard(client: httpx.AsyncClient) -> None:
    answer = await client.get("/")
    assert answer.status_code == 307
    assert answer.headers["location"] == "/dashboard"


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/tasks/0b9f5a3c"])
async def test_a_page_loads_only_its_own_files(client: httpx.AsyncClient, path: str) -> None:
    page = await client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert page.headers["x-content-type-options"] == "nosniff"
    loaded = [url for url in _LOADED.findall(page.text) if not url.startswith("#")]
    assert {url.split("?")[0] for url in loaded} >= {
        "/dashboard/assets/dashboard.js",
        "/dashboard/assets/dashboard.css",
    }
    for url in loaded:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url  # no other host
        asset = await client.get(url)
        assert asset.status_code == 200, url
        # Nothing the files load names another host (the SVG namespace is a name, not a load).
        outside = set(re.findall(r"https?://[^\s\"'`)]+", asset.text))
        assert outside <= {"http://www.w3.org/2000/svg"}, (url, outside)
    assert "<script>" not in page.text  # nothing inline: the policy would refuse it anyway


async def test_the_form_offers_every_type_of_the_catalogue(client: httpx.AsyncClient) -> None:
    page = (await client.get("/dashboard")).text
    block = re.search(r'<script type="application/json" id="catalogue">(.*?)</script>', page, re.S)
    assert block is not None
    catalogue = json.loads(block.group(1))
    assert [entry["name"] for entry in catalogue] == list(CATALOGUE)
    for entry in catalogue:
        assert json.loads(entry["schema"]) == CATALOGUE[entry["name"]].payload_schema()
        assert f'<option value="{entry["name"]}"' in page


async def test_the_task_id_of_the_url_is_escaped(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard/tasks/%3Cimg%20src=x%20onerror=alert(1)%3E%22")
    assert page.status_code == 200
    assert "<img" not in page.text
    assert 'data-task-id="&lt;img src=x onerror=alert(1)&gt;&#34;"' in page.text


async def test_the_pages_are_open_when_keys_are_on(repository: InMemoryTaskRepository) -> None:
    key, pair = new_api_key("alice")
    app: FastAPI = create_app(
        load_settings(api_keys=pair),
        Backends(repository=repository, publisher=RecordingPublisher()),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for path in ("/dashboard", "/dashboard/tasks/x", "/dashboard/assets/dashboard.js"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/api/tasks")).status_code == 401  # the data stays behind it
        keyed = await client.get("/api/tasks", headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200


async def test_the_files_are_kept_for_good_under_their_hashed_names(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/dashboard")).text
    for url in re.findall(r'(/dashboard/assets/[^"?]+\?v=[0-9a-f]{12})"', page):
        answer = await client.get(url)
        assert answer.headers["cache-control"] == "public, max-age=31536000, immutable", url
    # The page itself is asked for again each time: it names the files' current hashes.
    assert (await client.get("/dashboard")).headers["cache-control"] == "no-cache"
