"""Swagger UI at `/docs`, from files shipped with the API (api/static/swagger-ui: swagger-ui-dist
5.35.0 under its Apache licence), so the documentation loads nothing from a CDN and works
offline. FastAPI's own /docs and /redoc would fetch their scripts from jsdelivr (and ReDoc its
fonts from Google): both are off, and ReDoc is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
_FILES = Path(__file__).parent / "static" / "swagger-ui"


def install_swagger_ui(app: FastAPI) -> None:
    """GET /docs and its assets under /docs/assets/ (create the app with docs_url and
    redoc_url None)."""
    app.mount(ASSETS, StaticFiles(directory=_FILES), name="swagger-ui")
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    ).body

    async def docs(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    app.add_route("/docs", docs, methods=["GET"], include_in_schema=False)
