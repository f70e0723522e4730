"""Swagger UI at /docs from the files shipped with the API: the page names no outside URL,
and every file it loads is served here."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.unit


async def test_docs_load_nothing_from_outside(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    loaded = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert loaded, page.text
    assert not [url for url in loaded if "//" in url], loaded  # no CDN, no other host
    urls = re.findall(r"""url:\s*["']([^"']+)["']""", page.text)
    assert urls == ["/openapi.json"]
    for url in loaded:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    script = next(url for url in loaded if url.endswith(".js"))
    assert "SwaggerUIBundle" in (await client.get(script)).text
    assert (await client.get("/redoc")).status_code == 404  # ReDoc would load a CDN's script


async def test_the_licence_ships_with_the_files(client: httpx.AsyncClient) -> None:
    licence = await client.get("/docs/assets/LICENSE")
    assert licence.status_code == 200
    assert "Apache License" in licence.text
