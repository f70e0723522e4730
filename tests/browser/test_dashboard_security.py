"""What the dashboard must never do: run a task's text as markup, call anywhere but its own
service, or put a key where it outlives the tab or leaks (the URL, a cookie)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from browser.support import (
    KEY_STORAGE,
    LATER,
    ServiceClient,
    Services,
    Tab,
    TabMaker,
    accepted_task,
    cell,
    row,
)

pytestmark = pytest.mark.integration

MARKUP = "<img src=x onerror=alert(1)>"
WRONG_KEY = "tsk_not-a-key-anyone-was-given"


def no_markup_ran(tab: Tab, page: Page) -> None:
    assert page.locator("img").count() == 0, "the title became an element"
    assert page.evaluate("() => document.querySelectorAll('img').length") == 0
    # An <img src=x> made even for a moment would have asked for .../x.
    assert not [r.url for r in tab.requests if urlsplit(r.url).path.endswith("/x")]
    assert tab.dialogs == []


def test_markup_in_a_title_is_shown_as_text(services: Services, tab: Tab) -> None:
    page = tab.open("/dashboard")
    page.fill("#title", MARKUP)
    page.fill("#description", f"{MARKUP} <script>alert(2)</script>")
    page.fill("#metadata", '{"note": "<b onmouseover=alert(3)>bold</b>"}')
    page.click("#submit-button")
    task_id = accepted_task(page)
    expect(cell(page, task_id, "title")).to_have_text(MARKUP)
    no_markup_ran(tab, page)

    cell(page, task_id, "title").locator("a").click()
    page.wait_for_url(f"**/dashboard/tasks/{task_id}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(page.locator("#task-title")).to_have_text(MARKUP)
    expect(page.locator("#task-description")).to_have_text(f"{MARKUP} <script>alert(2)</script>")
    expect(page.locator("#task-metadata")).to_contain_text("<b onmouseover=alert(3)>bold</b>")
    assert page.locator("#main b, #main script").count() == 0
    assert MARKUP in page.title()
    no_markup_ran(tab, page)


def test_every_request_goes_to_the_service(services: Services, tab: Tab) -> None:
    page = tab.open("/dashboard")
    page.fill("#title", "asked for nowhere else")
    page.fill("#description", "the page calls its own service only")
    page.click("#submit-button")
    cell(page, accepted_task(page), "title").locator("a").click()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.go_back()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    paths = {urlsplit(request.url).path for request in tab.requests}
    # The pages, their script and stylesheet, the JSON API and its event streams: all here.
    assert {"/dashboard", "/api/tasks", "/api/tasks/stats", "/api/events"} <= paths
    assert any(path.startswith("/dashboard/assets/") for path in paths)
    assert tab.foreign_requests() == []


def test_a_key_is_asked_for_and_kept_for_the_tab_only(
    services: Services, new_tab: TabMaker
) -> None:
    alice, bob = (
        ServiceClient(services.keyed_url, services.keys[name]) for name in ("alice", "bob")
    )
    alices = {alice.submit("alice's first", **LATER), alice.submit("alice's second", **LATER)}
    bobs = bob.submit("bob's only", **LATER)
    anyones = ServiceClient(services.open_url).submit("made with keys off", **LATER)
    key = services.keys["alice"]

    tab = new_tab(keyed=True)
    page = tab.page
    page.goto("/dashboard")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#api-key")).to_be_focused()
    expect(page.locator("#api-key")).to_have_attribute("type", "password")

    page.fill("#api-key", WRONG_KEY)
    page.click("#api-key-submit")
    expect(page.locator("#api-key-error")).not_to_be_empty()
    expect(dialog).to_be_visible()

    page.fill("#api-key", key)
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    shown = {tr.get_attribute("data-task-id") for tr in page.locator("#tasks tbody tr").all()}
    assert shown == alices, "only alice's tasks"
    expect(page.locator("#count-total")).to_have_text("2")
    expect(page.locator('[data-count="PENDING"]')).to_have_text("2")
    expect(page.locator("#live")).to_have_text("live")

    # Another tenant's task is not found with this key.
    tab.open(f"/dashboard/tasks/{bobs}")
    expect(page.locator("#task-missing")).to_be_visible()
    tab.open(f"/dashboard/tasks/{anyones}")
    expect(page.locator("#task-missing")).to_be_visible()

    # Kept for the session: a reload asks no more.
    tab.open("/dashboard")
    expect(dialog).to_be_hidden()
    expect(row(page, next(iter(alices)))).to_have_count(1)
    assert page.evaluate("name => sessionStorage.getItem(name)", KEY_STORAGE) == key
    assert page.evaluate("() => localStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""
    assert tab.context.cookies() == []
    sent = set()
    for request in tab.requests:
        assert key not in request.url
        headers = request.all_headers()
        assert "cookie" not in headers
        if urlsplit(request.url).path.startswith("/api/"):
            sent.add(headers.get("authorization"))
        else:  # the pages and their files are asked for without it
            assert "authorization" not in headers
    assert sent == {None, f"Bearer {WRONG_KEY}", f"Bearer {key}"}

    # A new session (another tab's context) has no key until it is given one.
    other = new_tab(keyed=True).page
    other.goto("/dashboard")
    expect(other.locator("#key-dialog")).to_be_visible()
    assert other.evaluate("name => sessionStorage.getItem(name)", KEY_STORAGE) is None
