"""How the pages lay out and read: a phone's width without sideways scrolling, and axe-core's
accessibility rules (no serious or critical violation) on both pages and the key prompt."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from browser.support import (
    FAILING,
    LATER,
    SMALL_CHECKSUM,
    ServiceClient,
    Services,
    TabMaker,
    cell,
    serious_violations,
)

pytestmark = pytest.mark.integration

PHONE = ViewportSize(width=375, height=812)
# One unbroken word wider than a phone: it must wrap, not widen the page.
LONG_TITLE = "a-title-of-one-long-word-" * 6


def overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    width: int = page.evaluate(
        "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - document.documentElement.clientWidth"
    )
    return width


def within_width(page: Page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not shown"
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"], f"{selector} is off the screen: {box}"


def test_the_narrow_layout(services: Services, new_tab: TabMaker) -> None:
    client = ServiceClient(services.open_url)
    task_id = client.submit(LONG_TITLE, metadata={"note": "x" * 300}, **SMALL_CHECKSUM)
    client.submit("waits on a phone", **LATER)
    client.wait_for(task_id, "COMPLETED")
    tab = new_tab(viewport=PHONE)
    page = tab.open("/dashboard")
    assert overflow(page) <= 0, "the overview scrolls sideways at 375 px"

    # The table is usable: a task's title and status are on screen, and its link opens it.
    title = f'#tasks tbody tr[data-task-id="{task_id}"] td[data-field="title"] a'
    status = f'#tasks tbody tr[data-task-id="{task_id}"] td[data-field="status"]'
    page.locator(title).scroll_into_view_if_needed()
    within_width(page, title)
    within_width(page, status)
    expect(cell(page, task_id, "status")).to_have_text("COMPLETED")
    for field in ("#title", "#description", "#payload", "#submit-button", "#filter-status"):
        within_width(page, field)

    page.locator(title).click()
    page.wait_for_url(f"**/dashboard/tasks/{task_id}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#task-title")).to_have_text(LONG_TITLE)
    assert overflow(page) <= 0, "the task page scrolls sideways at 375 px"
    for part in ("#task-title", "#task-status", "#cancel-button", "#timeline"):
        within_width(page, part)


def test_the_overview_passes_axe(services: Services, new_tab: TabMaker) -> None:
    client = ServiceClient(services.open_url)
    client.submit("checked by axe", **LATER)
    client.wait_for(client.submit("a small checksum for axe", **SMALL_CHECKSUM), "COMPLETED")
    page = new_tab(bypass_csp=True).open("/dashboard")
    expect(page.locator("#tasks tbody tr")).not_to_have_count(0)
    expect(page.locator("#live")).to_have_text("live")
    assert serious_violations(page) == []

    # With field errors shown, too.
    page.click("#submit-button")
    expect(page.locator("#title-error")).not_to_be_empty()
    assert serious_violations(page) == []


def test_a_task_page_passes_axe(services: Services, new_tab: TabMaker) -> None:
    client = ServiceClient(services.open_url)
    task_id = client.submit("failed, for axe", metadata={"album": 7}, **FAILING)
    client.wait_for(task_id, "FAILED")
    page = new_tab(bypass_csp=True).open(f"/dashboard/tasks/{task_id}")
    expect(page.locator("#timeline li[data-kind=failed]")).to_have_count(1)
    assert serious_violations(page) == []


def test_the_key_prompt_passes_axe(services: Services, new_tab: TabMaker) -> None:
    page = new_tab(keyed=True, bypass_csp=True).page
    page.goto("/dashboard")
    expect(page.locator("#key-dialog")).to_be_visible()
    assert serious_violations(page) == []
