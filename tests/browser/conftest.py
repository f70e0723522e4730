"""The dashboard driven in a real browser: Debian's Chromium through Playwright's sync API.

One set of services serves the whole package, as real processes on a scratch database and
vhost of its own: a worker, an API with keys off and an API with keys on (the same database,
so a key's tenant sees only its own tasks). Each test gets a fresh browser context; every
request its pages make is recorded, and the test fails if one left the API's origin, a dialog
opened or a script threw.

The tests are plain functions, not coroutines: Playwright's sync API refuses to run inside a
running event loop, and pytest-asyncio runs none around a sync test (see `browser` for the
one constraint this puts on fixtures).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ViewportSize, expect, sync_playwright

from browser.support import Services, Tab, TabMaker
from common.api_keys import new_api_key
from common.settings import Settings
from testkit.processes import free_port, service_process, wait_ready
from testkit.scratch import scratch_environment, service_environment

# Debian's package (apt-get install chromium; .ci/run installs it): never `playwright install`.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
DESKTOP = ViewportSize(width=1280, height=800)
TENANTS = ("alice", "bob", "demo")

# A simulated task takes 1.5-2 s: long enough to see PROCESSING, short enough to wait for.
# A failed attempt is retried after 0.2 s, and a scheduled task is sent within 0.2 s of its time.
SERVICE_SETTINGS = {
    "processing_delay_min_seconds": 1.5,
    "processing_delay_max_seconds": 2.0,
    "retry_backoff_base_seconds": 0.2,
    "retry_backoff_factor": 1.0,
    "dispatch_interval_seconds": 0.2,
}

expect.set_options(timeout=15_000)


@pytest.fixture(scope="package")
async def browser_settings() -> AsyncIterator[Settings]:
    async with scratch_environment(**SERVICE_SETTINGS) as settings:
        yield settings


@contextmanager
def running_api(settings: Settings, logs: Path, name: str, api_keys: str) -> Iterator[str]:
    """An API process (API_KEYS as given) on a free port; its base URL once it is ready."""
    port = free_port()
    env = {**service_environment(settings), "API_PORT": str(port), "API_KEYS": api_keys}
    log = logs / f"{name}.log"
    with service_process("api-service", env, log):
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, log)
        yield base_url


@pytest.fixture(scope="package")
def services(
    browser_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    logs = tmp_path_factory.mktemp("services")
    keys, pairs = {}, []
    for tenant in TENANTS:
        keys[tenant], pair = new_api_key(tenant)
        pairs.append(pair)
    worker_env = {
        **service_environment(browser_settings),
        "CPU_POOL_SIZE": "2",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "1",
    }
    with (
        service_process("worker-service", worker_env, logs / "worker.log"),
        running_api(browser_settings, logs, "api-open", "") as open_url,
        running_api(browser_settings, logs, "api-keyed", ",".join(pairs)) as keyed_url,
    ):
        yield Services(open_url=open_url, keyed_url=keyed_url, keys=keys)


# Playwright's sync API leaves its own event loop marked as running in this thread while it is
# open, and pytest-asyncio cannot set up or tear down an async fixture then. So the browser
# starts after the services (which need the async scratch environment) and closes before
# they stop: package-scoped, after `services` (tests/browser has an __init__.py so that
# "package" ends with this directory, not the session). No test here may use an async fixture.
@pytest.fixture(scope="package")
def browser(services: Services) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        missing = f"no Chromium at {CHROMIUM}: apt-get install chromium (or CHROMIUM=path)"
        # A laptop without it skips these; CI installs it and says REQUIRE_CHROMIUM=1, so
        # there a missing browser fails the run instead.
        if os.environ.get("REQUIRE_CHROMIUM") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_tab(browser: Browser, services: Services) -> Iterator[TabMaker]:
    """Make a tab: `new_tab()` on the API with keys off at 1280x800; `keyed=True` for the
    API with keys on; `bypass_csp=True` lets a test inject a script (axe-core).
    Each tab is checked when the test ends: no request off the API's origin, no dialog, no
    uncaught error or CSP report."""
    tabs: list[Tab] = []

    def make(
        *, keyed: bool = False, viewport: ViewportSize = DESKTOP, bypass_csp: bool = False
    ) -> Tab:
        base_url = services.keyed_url if keyed else services.open_url
        context = browser.new_context(base_url=base_url, viewport=viewport, bypass_csp=bypass_csp)
        context.set_default_timeout(15_000)
        tab = Tab(context=context, page=context.new_page(), base_url=base_url)
        tabs.append(tab)
        return tab

    yield make
    for tab in tabs:
        tab.context.close()
    for tab in tabs:
        assert tab.foreign_requests() == [], "requests left the service"
        assert tab.dialogs == [], "the page opened dialogs"
        assert tab.errors == [], "the page's scripts failed"


@pytest.fixture
def tab(new_tab: TabMaker) -> Tab:
    """A tab on the API with keys off, 1280x800."""
    return new_tab()
