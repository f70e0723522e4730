"""The dashboard at /dashboard: pages rendered from Jinja2 templates (api/templates/dashboard),
with a small script and stylesheet shipped beside them (api/static/dashboard).

The pages hold no task data, so they are served without a key: the script reads everything
through the JSON API, as any client does, with the caller's key when keys are on (asked for
once, kept in the tab's sessionStorage). One tenant-wide event stream keeps the page live;
nothing is fetched on a timer. The script writes every value a task carries as text, never
as HTML, and a Content-Security-Policy lets the pages run no script but their own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from common.task_types import CATALOGUE, DEFAULT_TYPE
from common.tasks import TaskStatus

PAGES = "/dashboard"
ASSETS = "/dashboard/assets"
_HERE = Path(__file__).parent
_FILES = _HERE / "static" / "dashboard"

# Only the dashboard's own files: no inline script, no other origin, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _Assets(StaticFiles):
    """The dashboard's files. The pages name each with a hash of its content, so a browser
    may keep one for good and never ask again: another content is another URL."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def install_dashboard(app: FastAPI) -> None:
    """GET / (a redirect), /dashboard, /dashboard/tasks/{task_id} and the assets."""
    app.mount(ASSETS, _Assets(directory=_FILES), name="dashboard")
    templates = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    common = {"assets": _asset_urls(), "statuses": [status.value for status in TaskStatus]}
    overview = templates.get_template("dashboard/index.html").render(
        **common, types=_catalogue(), default_type=DEFAULT_TYPE
    )
    task_page = templates.get_template("dashboard/task.html")

    async def root(request: Request) -> RedirectResponse:
        return RedirectResponse(PAGES, status_code=307)

    async def dashboard(request: Request) -> HTMLResponse:
        return HTMLResponse(overview, headers=_PAGE_HEADERS)

    async def task(request: Request) -> HTMLResponse:
        # The id goes into the page as an attribute value (escaped); the script asks the API.
        task_id = request.path_params["task_id"]
        return HTMLResponse(task_page.render(**common, task_id=task_id), headers=_PAGE_HEADERS)

    app.add_route("/", root, methods=["GET"], include_in_schema=False)
    app.add_route(PAGES, dashboard, methods=["GET"], include_in_schema=False)
    app.add_route(f"{PAGES}/tasks/{{task_id}}", task, methods=["GET"], include_in_schema=False)


def _asset_urls() -> dict[str, str]:
    """Each asset's URL with a hash of its content, so a browser never runs a stale copy."""
    urls = {}
    for path in sorted(_FILES.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        urls[path.name] = f"{ASSETS}/{path.name}?v={digest}"
    return urls


def _catalogue() -> list[dict[str, Any]]:
    """The submit form's types: name, description, and a payload to start from."""
    entries = []
    for task_type in CATALOGUE.values():
        schema = task_type.payload.model_json_schema()
        examples = schema.get("examples") or [{}]
        entries.append(
            {
                "name": task_type.name,
                "description": task_type.description,
                "example": json.dumps(examples[0], indent=2),
                "schema": json.dumps(schema, indent=2),
            }
        )
    return entries
