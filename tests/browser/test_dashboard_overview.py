"""The overview at /dashboard: its figures, the live table, the filters and the submit form,
by mouse and by keyboard alone."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import Page, expect

from browser.support import SMALL_CHECKSUM, ServiceClient, Services, Tab, accepted_task, cell, row

pytestmark = pytest.mark.integration

STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "CANCELLED")


def shown_counts(page: Page) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in (*STATUSES, "total"):
        selector = "#count-total" if status == "total" else f'[data-count="{status}"]'
        text = page.locator(selector).inner_text().replace(",", "")
        counts[status] = int(text) if text.isdigit() else -1
    return counts


def test_root_redirects_to_the_dashboard(services: Services, tab: Tab) -> None:
    answer = httpx.get(f"{services.open_url}/", follow_redirects=False, timeout=30)
    assert answer.status_code == 307
    assert answer.headers["location"] == "/dashboard"

    page = tab.open("/")
    assert page.url == f"{services.open_url}/dashboard"
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator("#tasks")).to_be_visible()
    expect(page.locator("#throughput-chart")).to_have_attribute("role", "img")
    for figure in ("#queue-ready", "#outbox-backlog"):
        expect(page.locator(figure)).to_have_text(re.compile(r"^(\d[\d,]*|—)$"))


def test_counts_are_the_apis(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    client.submit("counted while pending", delay_seconds=3600)
    page = tab.open("/dashboard")
    # Tasks of other tests may move meanwhile: the page follows them live, so it must agree
    # with the API within a few seconds.
    deadline = time.monotonic() + 15
    while True:
        stats = client.stats()
        expected = {**stats, "total": sum(stats.values())}
        if shown_counts(page) == expected:
            break
        assert time.monotonic() < deadline, f"{shown_counts(page)} != {expected}"
        page.wait_for_timeout(200)  # the poll's interval, within the deadline above
    assert expected["PENDING"] >= 1


def test_a_submitted_task_moves_through_its_statuses_live(services: Services, tab: Tab) -> None:
    page = tab.open("/dashboard")
    page.fill("#title", "watched through the dashboard")
    page.fill("#description", "PENDING for a second, then PROCESSING, then COMPLETED")
    page.fill("#delay_seconds", "1")  # PENDING long enough to be seen, then it runs
    page.click("#submit-button")

    task_id_text = accepted_task(page)
    expect(page.locator("#tasks tbody tr").first).to_have_attribute("data-task-id", task_id_text)
    expect(cell(page, task_id_text, "title")).to_have_text("watched through the dashboard")
    expect(cell(page, task_id_text, "type")).to_have_text("simulated")
    status = cell(page, task_id_text, "status")
    expect(status).to_have_text("PENDING")
    expect(status).to_have_text("PROCESSING", timeout=20_000)
    expect(status).to_have_text("COMPLETED", timeout=20_000)
    expect(cell(page, task_id_text, "attempts")).to_have_text("1")
    assert ServiceClient(services.open_url).task(task_id_text)["status"] == "COMPLETED"
    assert tab.navigations == [f"{services.open_url}/dashboard"], "the page was reloaded"


def test_a_blank_title_is_refused_with_its_field_error(services: Services, tab: Tab) -> None:
    page = tab.open("/dashboard")
    rows = page.locator("#tasks tbody tr").count()
    page.fill("#title", "   ")
    page.fill("#description", "a task with no title")
    page.click("#submit-button")

    title = page.locator("#title")
    expect(page.locator("#title-error")).not_to_be_empty()
    expect(title).to_have_attribute("aria-invalid", "true")
    assert "title-error" in (title.get_attribute("aria-describedby") or "").split()
    expect(title).to_be_focused()
    expect(page.locator("#submit-status")).not_to_be_empty()
    expect(page.locator("#description")).not_to_have_attribute("aria-invalid", "true")
    assert page.locator("#tasks tbody tr").count() == rows

    page.fill("#title", "titled after all")
    page.click("#submit-button")
    expect(page.locator("#submit-status")).to_contain_text("Accepted")
    expect(page.locator("#title-error")).to_be_empty()
    expect(title).not_to_have_attribute("aria-invalid", "true")


def focus_by_tab(page: Page, selector: str, *, backwards: bool = False, limit: int = 200) -> None:
    """Press Tab (Shift+Tab backwards) until the element at `selector` has the focus."""
    target = page.locator(selector)
    for _ in range(limit):
        if target.evaluate("node => node === document.activeElement"):
            return
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
    raise AssertionError(f"{selector} not reached in {limit} presses of Tab")


def test_the_form_and_a_task_page_by_keyboard_alone(services: Services, tab: Tab) -> None:
    page = tab.open("/dashboard")
    focus_by_tab(page, "#title")
    page.keyboard.type("typed, never clicked")
    page.keyboard.press("Tab")
    expect(page.locator("#description")).to_be_focused()
    page.keyboard.type("submitted with the keyboard")
    focus_by_tab(page, "#submit-button")
    page.keyboard.press("Enter")
    task_id = accepted_task(page)
    expect(cell(page, task_id, "title")).to_have_text("typed, never clicked")

    # The table is above the form: back to the new task's link, the first row's.
    focus_by_tab(page, f'#tasks tbody tr[data-task-id="{task_id}"] a', backwards=True)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/dashboard/tasks/{task_id}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#task-title")).to_have_text("typed, never clicked")
    expect(page.locator("#task-description")).to_have_text("submitted with the keyboard")


def test_the_filters_narrow_the_table(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    checksum = client.submit("a small checksum", **SMALL_CHECKSUM)
    later = client.submit("filtered while pending", delay_seconds=3600)
    client.wait_for(checksum, "COMPLETED")
    page = tab.open("/dashboard")
    expect(row(page, later)).to_have_count(1)

    page.select_option("#filter-type", "checksum")
    expect(row(page, later)).to_have_count(0)
    expect(row(page, checksum)).to_have_count(1)
    expect(page.locator('#tasks tbody td[data-field="type"]')).not_to_have_count(0)
    for text in page.locator('#tasks tbody td[data-field="type"]').all_inner_texts():
        assert text == "checksum"

    page.select_option("#filter-type", "")
    page.select_option("#filter-status", "PENDING")
    expect(row(page, checksum)).to_have_count(0)
    expect(row(page, later)).to_have_count(1)
    for text in page.locator('#tasks tbody td[data-field="status"]').all_inner_texts():
        assert text == "PENDING"


def test_older_tasks_load_on_demand(services: Services, tab: Tab) -> None:
    client = ServiceClient(services.open_url)
    made = [client.submit(f"one of many {n}", delay_seconds=3600) for n in range(45)]
    page = tab.open("/dashboard")
    page.select_option("#filter-status", "PENDING")
    expect(row(page, made[-1])).to_have_count(1)
    more = page.locator("#load-more")
    while row(page, made[0]).count() == 0:
        expect(more).to_be_visible()
        shown = page.locator("#tasks tbody tr").count()
        more.click()
        expect(page.locator("#tasks tbody tr")).not_to_have_count(shown)
    ids = [r.get_attribute("data-task-id") for r in page.locator("#tasks tbody tr").all()]
    assert len(ids) == len(set(ids)), "a task is listed twice"
    positions = [ids.index(task_id) for task_id in made]
    assert positions == sorted(positions, reverse=True), "not newest first"
