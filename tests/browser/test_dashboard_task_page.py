"""One task's page, /dashboard/tasks/{id}: its details, result and timeline, live, and its
cancel and retry buttons (retry only for FAILED: the API re-drives nothing else)."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Page, expect

from browser.support import (
    FAILING,
    LATER,
    LONG_RUNNING,
    SMALL_CHECKSUM,
    ServiceClient,
    Services,
    Tab,
    checksum_of,
)

pytestmark = pytest.mark.integration


def timeline_kinds(page: Page) -> list[str]:
    return [
        item.get_attribute("data-kind") or ""
        for item in page.locator("#timeline li[data-kind]").all()
    ]


def test_a_task_page_shows_its_details_timeline_and_result(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    metadata = {"album": 42, "tags": ["browser", "test"]}
    task_id = client.submit("a checksum to look at", metadata=metadata, **SMALL_CHECKSUM)
    page = tab.open(f"/dashboard/tasks/{task_id}")

    expect(page.locator("#task-title")).to_have_text("a checksum to look at")
    expect(page.locator("#task-description")).to_have_text(
        "a checksum to look at: made by the browser tests"
    )
    expect(page.locator("#task-type")).to_have_text("checksum")
    expect(page.locator("#task-status")).to_have_text("COMPLETED")
    expect(page.locator("#task-attempts")).to_have_text("1")
    expect(page.locator("#timeline li[data-kind=completed]")).to_have_count(1)
    kinds = [kind for kind in timeline_kinds(page) if kind != "progress"]
    assert kinds == ["created", "started", "completed"]

    assert json.loads(page.locator("#task-payload").inner_text()) == SMALL_CHECKSUM["payload"]
    assert json.loads(page.locator("#task-metadata").inner_text()) == metadata
    expect(page.locator("#task-result")).to_contain_text('"sha256"')
    result = json.loads(page.locator("#task-result").inner_text())
    assert result == {"sha256": checksum_of(65_536, 4096, seed=7), "bytes": 65_536, "chunks": 16}
    assert page.locator("#task-progress").evaluate("bar => bar.value") == 1
    expect(page.locator("#cancel-button")).to_be_disabled()
    expect(page.locator("#retry-button")).to_be_disabled()
    expect(page.locator("#task-error")).to_be_empty()


def test_a_task_page_follows_its_task_live(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    task_id = client.submit("followed on its page", delay_seconds=1)
    page = tab.open(f"/dashboard/tasks/{task_id}")
    status = page.locator("#task-status")
    expect(status).to_have_text("PENDING")
    expect(status).to_have_text("PROCESSING", timeout=20_000)
    expect(page.locator("#timeline li[data-kind=started]")).to_have_count(1)
    expect(status).to_have_text("COMPLETED", timeout=20_000)
    expect(page.locator("#timeline li[data-kind=completed]")).to_have_count(1)
    expect(page.locator("#task-result")).not_to_be_empty()
    assert len(tab.navigations) == 1, "the page was reloaded"


def test_cancel_a_pending_task(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    task_id = client.submit("cancelled before it starts", **LATER)
    page = tab.open(f"/dashboard/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("PENDING")
    expect(page.locator("#retry-button")).to_be_disabled()

    page.click("#cancel-button")
    expect(page.locator("#task-status")).to_have_text("CANCELLED")
    expect(page.locator("#action-status")).not_to_be_empty()
    expect(page.locator("#timeline li[data-kind=cancelled]")).to_have_count(1)
    expect(page.locator("#cancel-button")).to_be_disabled()
    expect(page.locator("#retry-button")).to_be_disabled()  # the API retries FAILED only
    assert client.task(task_id)["status"] == "CANCELLED"


def test_cancel_a_running_task(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    task_id = client.submit("cancelled while it runs", **LONG_RUNNING)
    try:
        page = tab.open(f"/dashboard/tasks/{task_id}")
        expect(page.locator("#task-status")).to_have_text("PROCESSING", timeout=20_000)
        expect(page.locator("#timeline li[data-kind=started]")).to_have_count(1)

        page.click("#cancel-button")
        expect(page.locator("#task-status")).to_have_text("CANCELLED")
        expect(page.locator("#action-status")).not_to_be_empty()
        expect(page.locator("#timeline li[data-kind=cancelled]")).to_have_count(1)
        expect(page.locator("#cancel-button")).to_be_disabled()
        assert client.task(task_id)["status"] == "CANCELLED"
    finally:
        client.cancel(task_id)  # frees the worker's pool process if the test failed early


def test_retry_a_failed_task(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    task_id = client.submit("fails until retried", **FAILING)
    page = tab.open(f"/dashboard/tasks/{task_id}")
    expect(page.locator("#task-status")).to_have_text("FAILED", timeout=30_000)
    expect(page.locator("#task-attempts")).to_have_text("3")
    expect(page.locator("#task-error")).to_contain_text("timed out after 1 s")
    expect(page.locator("#timeline li[data-kind=retry_scheduled]")).to_have_count(2)
    expect(page.locator("#timeline li[data-kind=failed]")).to_contain_text("timed out after 1 s")
    expect(page.locator("#cancel-button")).to_be_disabled()
    retry = page.locator("#retry-button")
    expect(retry).to_be_enabled()

    retry.click()
    expect(page.locator("#timeline li[data-kind=redriven]")).to_have_count(1)
    expect(page.locator("#action-status")).not_to_be_empty()
    assert client.task(task_id)["status"] in ("PENDING", "PROCESSING", "FAILED")
    # It runs again, live on the same page: a new attempt, failing the same way.
    expect(page.locator("#timeline li[data-kind=started]").nth(3)).to_be_attached(timeout=20_000)
    expect(page.locator("#task-status")).to_have_text("FAILED", timeout=30_000)
    expect(page.locator("#timeline li[data-kind=failed]")).to_have_count(2)
    assert len(tab.navigations) == 1, "the page was reloaded"


def test_an_unknown_task_says_so(services: Services, tab: Tab) -> None:
    page = tab.open("/dashboard/tasks/00000000-0000-4000-8000-000000000000")
    expect(page.locator("#task-missing")).to_be_visible()
    expect(page.locator("#cancel-button")).to_be_hidden()
