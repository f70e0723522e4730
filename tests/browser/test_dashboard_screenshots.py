"""The README's pictures of the dashboard, at 1280x800 and 375 px wide (the whole page), of a
tenant of their own with tasks in every status. `make screenshots` runs this file with SCREENSHOTS_DIR set
(docs/images); other runs write them to a temporary directory."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import ViewportSize, expect

from browser.support import (
    FAILING,
    KEY_STORAGE,
    LATER,
    LONG_RUNNING,
    SMALL_CHECKSUM,
    ServiceClient,
    Services,
    TabMaker,
)

pytestmark = pytest.mark.integration

SHOTS = {
    "dashboard-desktop.png": ViewportSize(width=1280, height=800),
    "dashboard-mobile.png": ViewportSize(width=375, height=812),
}


@pytest.fixture
def demo_tasks(services: Services) -> Iterator[ServiceClient]:
    """The `demo` tenant's tasks, one or more of each status, settled where they will stay
    while the pictures are taken (but one, running for minutes, cancelled afterwards)."""
    client = ServiceClient(services.keyed_url, services.keys["demo"])
    done = [
        client.submit("Resize album 42 covers"),
        client.submit("Checksum nightly export", **SMALL_CHECKSUM),
        client.submit("Send weekly digest"),
    ]
    failed = client.submit("Verify archive upload", **FAILING)
    cancelled = client.submit("Rebuild search index", **LATER)
    client.cancel(cancelled)
    client.submit("Monthly invoice run", **LATER)
    running = client.submit("Hash chain audit", **LONG_RUNNING)
    try:
        for task_id in done:
            client.wait_for(task_id, "COMPLETED")
        client.wait_for(failed, "FAILED")
        client.wait_for(running, "PROCESSING")
        yield client
    finally:
        client.cancel(running)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_screenshots(
    services: Services,
    new_tab: TabMaker,
    demo_tasks: ServiceClient,
    tmp_path: Path,
) -> None:
    target = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    key = services.keys["demo"]
    for name, viewport in SHOTS.items():
        tab = new_tab(keyed=True, viewport=viewport)
        # The key as the prompt would have kept it, so the picture shows no dialog.
        tab.context.add_init_script(f"sessionStorage.setItem({KEY_STORAGE!r}, {key!r})")
        page = tab.open("/dashboard")
        expect(page.locator("#key-dialog")).to_be_hidden()
        expect(page.locator("#live")).to_have_text("live")
        expect(page.locator("#tasks tbody tr")).to_have_count(7)
        expect(page.locator('[data-count="COMPLETED"]')).to_have_text("3")
        expect(page.locator("#throughput-chart rect")).not_to_have_count(0)
        # The phone's picture is of the whole page: its table is below the fold.
        whole = viewport["width"] < 600
        page.screenshot(path=target / name, animations="disabled", caret="hide", full_page=whole)
        assert png_size(target / name)[0] == viewport["width"]
