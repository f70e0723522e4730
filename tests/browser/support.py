"""What the browser tests share besides fixtures: the running services, tasks made through the
API as a client makes them, a browser tab that records what its page does, and axe-core."""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Error,
    Frame,
    Locator,
    Page,
    Request,
    ViewportSize,
    expect,
)

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
KEY_STORAGE = "task-service.api-key"

# Tasks whose course the tests know in advance, whatever the worker's random pause.
# Never starts while a test runs: a task to cancel while PENDING.
LATER = {"delay_seconds": 3600}
# Runs for minutes in a pool process (SHA-256 500 million times): a task to cancel while running.
LONG_RUNNING = {"type": "hash_chain", "payload": {"rounds": 500_000_000}}
# Each of its 3 attempts times out after 1 s (a 1 GiB checksum): a task that ends FAILED.
FAILING = {
    "type": "checksum",
    "payload": {"size_bytes": 1 << 30, "chunk_bytes": 4096},
    "timeout_seconds": 1,
}
# Done in milliseconds, with a result the test can compute (see checksum_of).
SMALL_CHECKSUM = {
    "type": "checksum",
    "payload": {"size_bytes": 65_536, "chunk_bytes": 4096, "seed": 7},
}


@dataclass(frozen=True)
class Services:
    """The API with keys off, another with keys on (the same database), and their keys."""

    open_url: str
    keyed_url: str
    keys: dict[str, str]  # tenant -> API key, all admitted by the keyed API


class ServiceClient:
    """The JSON API as a client sees it, for making and reading tasks around a page."""

    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url = base_url
        self.headers = {} if key is None else {"Authorization": f"Bearer {key}"}

    def submit(self, title: str, **fields: Any) -> str:
        body = {"title": title, "description": f"{title}: made by the browser tests", **fields}
        response = httpx.post(
            f"{self.base_url}/api/tasks", json=body, headers=self.headers, timeout=30
        )
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        response = httpx.get(
            f"{self.base_url}/api/tasks/{task_id}", headers=self.headers, timeout=30
        )
        assert response.status_code == 200, response.text
        task: dict[str, Any] = response.json()
        return task

    def stats(self) -> dict[str, int]:
        response = httpx.get(f"{self.base_url}/api/tasks/stats", headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        counts: dict[str, int] = response.json()["counts"]
        return counts

    def cancel(self, task_id: str) -> None:
        """Cancel the task if it is not final yet (a test's cleanup)."""
        httpx.post(f"{self.base_url}/api/tasks/{task_id}/cancel", headers=self.headers, timeout=30)

    def wait_for(self, task_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        """The task once its status is one of `statuses`; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] in statuses:
                return task
            if time.monotonic() >= deadline:
                raise AssertionError(f"task {task_id} is {task['status']}, not {statuses}")
            time.sleep(0.1)  # the poll's interval, within the deadline above


@dataclass
class Tab:
    """A page in a context of its own, on one API, recording every request it makes, every
    dialog it opens, every uncaught error and every Content-Security-Policy report."""

    context: BrowserContext
    page: Page
    base_url: str
    requests: list[Request] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context.on("request", self._on_request)
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", self._on_page_error)
        self.page.on("console", self._on_console)
        self.page.on("framenavigated", self._on_navigation)

    def _on_request(self, request: Request) -> None:
        self.requests.append(request)

    def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught: {error}")

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")

    def _on_navigation(self, frame: Frame) -> None:
        if frame == self.page.main_frame:
            self.navigations.append(frame.url)

    def open(self, path: str) -> Page:
        """Go to `path` and wait until the page says all its initial data is rendered."""
        self.page.goto(path)
        expect(self.page.locator("body")).to_have_attribute("data-ready", "true")
        return self.page

    def foreign_requests(self) -> list[str]:
        """Every request the pages made anywhere but the API's own origin."""
        origin = urlsplit(self.base_url)
        return [
            request.url
            for request in self.requests
            if (urlsplit(request.url).scheme, urlsplit(request.url).netloc)
            != (origin.scheme, origin.netloc)
        ]


class TabMaker(Protocol):
    """The `new_tab` fixture: a tab on the API with keys off (`keyed`: on) at 1280x800."""

    def __call__(
        self, *, keyed: bool = False, viewport: ViewportSize = ..., bypass_csp: bool = False
    ) -> Tab: ...


TASK_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def accepted_task(page: Page) -> str:
    """The id of the task the submit form just made, as #submit-status names it, once its row
    is in the table."""
    status = page.locator("#submit-status")
    expect(status).to_contain_text("Accepted")
    found = TASK_ID.search(status.inner_text())
    assert found is not None, status.inner_text()
    expect(row(page, found.group())).to_have_count(1)
    return found.group()


def row(page: Page, task_id: str) -> Locator:
    return page.locator(f'#tasks tbody tr[data-task-id="{task_id}"]')


def cell(page: Page, task_id: str, name: str) -> Locator:
    return row(page, task_id).locator(f'td[data-field="{name}"]')


def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each (its context
    must let the script in: new_context(bypass_csp=True), as the page allows only its own)."""
    page.add_script_tag(path=AXE)
    violations: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const results = await axe.run(document, { resultTypes: ["violations"] });
            return results.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map((n) => n.target.join(" ")),
            }));
        }"""
    )
    return [
        f"{v['impact']} {v['id']} ({v['help']}): {', '.join(v['targets'])}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]


def checksum_of(size_bytes: int, chunk_bytes: int, seed: int = 0) -> str:
    """The SHA-256 the checksum type computes for this payload (its generated stream)."""
    rng = random.Random(seed)  # the handler's own stream
    digest = hashlib.sha256()
    left = size_bytes
    while left > 0:
        part = rng.randbytes(min(chunk_bytes, left))
        left -= len(part)
        digest.update(part)
    return digest.hexdigest()
