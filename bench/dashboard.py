"""8: the dashboard's page load, over the read measurement's rows (a month of history).

Debian's Chromium, headless, driven through Playwright from the suite's own process, loads
/dashboard from the API x1: one warm-up load (the first in a fresh browser: its processes
start, nothing is compiled yet), reported apart, then `dashboard_loads` first visits, each in
a new browser context (nothing cached: the page, its script, stylesheet and icon are fetched),
then `dashboard_loads` loads in new tabs of one context that has loaded it before, as a user
opens it again (the files, named by their content's hash, come from the cache). Either way
the script then makes its four calls before it marks itself ready (the counts, one page of the
table, the chart's hour and the backlog) and opens the event stream it keeps open. The target
is the second kind's p50. The figure is the script's `dashboard-ready` mark, which it sets once all four
are drawn: its startTime counts from the navigation's start. Each load's API calls are read
from its Resource Timing entries.

Honesty, on every load: the page got ready (not an error), it made the four calls, its table
shows the ids of `GET /api/tasks?limit=20` in order (the table's newest 20), and each
`[data-count]` figure and the total equal `GET /api/tasks/stats` (whose counts equal the
table's).

`python -m bench.dashboard [--smoke]` runs this measurement alone: it loads the read
measurement's rows, measures, and clears them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import uvloop
from playwright.async_api import Browser, BrowserContext, async_playwright

from bench import services
from bench.environment import BenchEnvironment, bench_environment
from bench.plan import FULL, SMOKE, Plan
from bench.read import clear_rows, load_rows
from bench.report import dashboard_rows, markdown_table
from bench.results import Check, DashboardLoads, percentile

# Debian's package, as the browser tests use it: never `playwright install`.
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
PAGE_ROWS = 20  # the dashboard's page of the table
LIST_CALL = f"/api/tasks?limit={PAGE_ROWS}"
# What the script asks for before it marks itself ready, by the name the report gives it.
CALLS = {
    "stats": "/api/tasks/stats",
    "list": LIST_CALL,
    "throughput": "/api/tasks/throughput?minutes=60",
    "queue": "/api/queue",
}
_TIMEOUT_MS = 30_000
_COUNT = re.compile(r"\d{1,3}(,\d{3})*")

# Run in the page once it is ready (or failed): the mark, what it drew, its fetches.
_READ_PAGE = """() => {
  const mark = performance.getEntriesByName("dashboard-ready")[0];
  return {
    state: document.body.dataset.ready,
    ready_ms: mark ? mark.startTime : null,
    ids: [...document.querySelectorAll("#tasks tbody tr")].map((tr) => tr.dataset.taskId),
    counts: Object.fromEntries(
      [...document.querySelectorAll("[data-count]")].map((n) => [n.dataset.count, n.textContent]),
    ),
    total: document.getElementById("count-total").textContent,
    calls: performance.getEntriesByType("resource")
      .filter((e) => e.initiatorType === "fetch")
      .map((e) => ({ url: e.name, start: e.startTime, end: e.responseEnd })),
  };
}"""


@dataclass(frozen=True, slots=True)
class PageLoad:
    """One load as the page saw it."""

    state: str | None
    ready_ms: float | None
    ids: list[str]
    counts: dict[str, int | None]  # by status, as drawn (None: a dash, or not a number)
    total: int | None
    calls: dict[str, float]  # by CALLS' names, each one's duration
    calls_start_ms: float  # the first call's start: the page and its script before it
    calls_end_ms: float  # the last call's end: drawing the answers after it

    @property
    def slowest(self) -> tuple[str, float]:
        name = max(self.calls, key=self.calls.__getitem__)
        return name, self.calls[name]


@dataclass(frozen=True, slots=True)
class Expected:
    """What every load must draw: the API's answers, read once (nothing changes meanwhile)."""

    ids: list[str]
    counts: dict[str, int]
    total: int


def _drawn_count(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text.replace(",", "")) if _COUNT.fullmatch(text) else None


def _call_name(url: str) -> str | None:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return next((name for name, call in CALLS.items() if call == path), None)


def _page_load(seen: dict[str, Any]) -> PageLoad:
    calls: dict[str, float] = {}
    spans: list[tuple[float, float]] = []
    for entry in seen["calls"]:
        name = _call_name(entry["url"])
        if name is not None:
            start, end = float(entry["start"]), float(entry["end"])
            calls[name] = max(calls.get(name, 0.0), end - start)
            spans.append((start, end))
    return PageLoad(
        state=seen["state"],
        ready_ms=seen["ready_ms"],
        ids=list(seen["ids"]),
        counts={status: _drawn_count(text) for status, text in seen["counts"].items()},
        total=_drawn_count(seen["total"]),
        calls=calls,
        calls_start_ms=min((start for start, _ in spans), default=math.nan),
        calls_end_ms=max((end for _, end in spans), default=math.nan),
    )


async def _load_in_tab(context: BrowserContext, url: str) -> PageLoad:
    """/dashboard in a new tab of `context`, read once the script is done."""
    page = await context.new_page()
    try:
        await page.goto(url, timeout=_TIMEOUT_MS)
        await page.wait_for_function("() => document.body.dataset.ready", timeout=_TIMEOUT_MS)
        return _page_load(await page.evaluate(_READ_PAGE))
    finally:
        await page.close()


async def _first_visit(browser: Browser, url: str) -> PageLoad:
    """/dashboard in a new context: a browser profile that has never seen it (nothing
    cached, no connection open)."""
    context = await browser.new_context()
    try:
        return await _load_in_tab(context, url)
    finally:
        await context.close()


async def _expected(client: httpx.AsyncClient) -> Expected:
    pages, stats = await asyncio.gather(client.get(LIST_CALL), client.get(CALLS["stats"]))
    for answer in (pages, stats):
        answer.raise_for_status()
    counts = orjson.loads(stats.content)
    return Expected(
        ids=[item["task_id"] for item in orjson.loads(pages.content)["items"]],
        counts={str(status): int(n) for status, n in counts["counts"].items()},
        total=int(counts["total"]),
    )


def _drew(load: PageLoad, expected: Expected) -> bool:
    counts = {status: expected.counts.get(status) for status in load.counts}
    return (
        load.state == "true"
        and load.ready_ms is not None
        and set(load.calls) == set(CALLS)
        and load.ids == expected.ids
        and load.counts == counts
        and set(expected.counts) <= set(load.counts)
        and load.total == expected.total
    )


async def _check(bench: BenchEnvironment, loads: list[PageLoad], expected: Expected) -> Check:
    newest = await bench.table.newest_ids(None, limit=PAGE_ROWS)
    table = await bench.table.status_counts()
    answered = {status: n for status, n in expected.counts.items() if n}
    drew = sum(_drew(load, expected) for load in loads)
    ok = (
        drew == len(loads)
        and len(expected.ids) == PAGE_ROWS
        and expected.ids == newest
        and answered == table
        and expected.total == sum(table.values())
    )
    return Check(
        f"dashboard, {len(loads)} loads",
        f"{drew} of {len(loads)} ready with all {len(CALLS)} calls made, {PAGE_ROWS} rows"
        f" {'=' if len(expected.ids) == PAGE_ROWS else '!='} {len(expected.ids)}; the ids of"
        f" {LIST_CALL} ({'the' if expected.ids == newest else 'NOT the'} table's newest"
        f" {PAGE_ROWS}) and the counts of {CALLS['stats']} ({expected.total:,} in all,"
        f" {'equal to' if answered == table else 'NOT'} the table's)",
        ok,
    )


def _summary(
    rows: int, warmup: PageLoad, loads: list[PageLoad], first: list[PageLoad]
) -> DashboardLoads:
    ready = [load.ready_ms for load in loads if load.ready_ms is not None]
    first_ready = [load.ready_ms for load in first if load.ready_ms is not None]
    slowest = [load.slowest for load in loads if load.calls]
    names = Counter(name for name, _ in slowest)
    slowest_name, slowest_loads = names.most_common(1)[0] if names else ("", 0)
    return DashboardLoads(
        rows=rows,
        loads=len(loads),
        warmup_ms=warmup.ready_ms if warmup.ready_ms is not None else math.nan,
        p50_ms=percentile(ready, 50),
        p95_ms=percentile(ready, 95),
        max_ms=max(ready, default=math.nan),
        first_visit_p50_ms=percentile(first_ready, 50),
        first_visit_p95_ms=percentile(first_ready, 95),
        slowest_call_p50_ms=percentile([ms for _, ms in slowest], 50),
        slowest_call_max_ms=max((ms for _, ms in slowest), default=math.nan),
        slowest_call=slowest_name,
        slowest_call_loads=slowest_loads,
        before_calls_p50_ms=percentile([load.calls_start_ms for load in loads], 50),
        calls_span_p50_ms=percentile(
            [load.calls_end_ms - load.calls_start_ms for load in loads], 50
        ),
        after_calls_p50_ms=percentile(
            [load.ready_ms - load.calls_end_ms for load in loads if load.ready_ms is not None], 50
        ),
        calls_p50_ms={
            name: percentile([load.calls[name] for load in loads if name in load.calls], 50)
            for name in CALLS
        },
    )


async def measure_dashboard(
    bench: BenchEnvironment, plan: Plan
) -> tuple[DashboardLoads, list[Check]]:
    """One warm-up load and `plan.dashboard_loads` measured ones, on API x1."""
    rows = await bench.table.count()
    async with services.api(bench, processes=1) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            expected = await _expected(client)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                url = f"{service.url}/dashboard"
                warmup = await _first_visit(browser, url)
                first = [await _first_visit(browser, url) for _ in range(plan.dashboard_loads)]
                # Opened again in a new tab of a browser that has been there: its files come
                # from the cache (immutable), the data from the API as always.
                context = await browser.new_context()
                try:
                    await _load_in_tab(context, url)
                    loads = [await _load_in_tab(context, url) for _ in range(plan.dashboard_loads)]
                finally:
                    await context.close()
            finally:
                await browser.close()
        service.check_alive()
    check = await _check(bench, [warmup, *first, *loads], expected)
    return _summary(rows, warmup, loads, first), [check]


def main() -> int:
    """This measurement alone, in a scratch database and vhost of its own, over the read
    measurement's rows: its rows of the table and its honesty check."""
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard")
    parser.add_argument("--smoke", action="store_true", help="the smoke run's sizes")
    plan = SMOKE if parser.parse_args().smoke else FULL
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def run() -> tuple[DashboardLoads, list[Check], float]:
        async with bench_environment() as bench:
            _, seconds = await load_rows(bench, plan)
            numbers, checks = await measure_dashboard(bench, plan)
            await clear_rows(bench)
            return numbers, checks, seconds

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        numbers, checks, seconds = runner.run(run())
    sys.stdout.write(f"{plan.read_rows:,} rows loaded in {seconds:.1f} s\n")
    sys.stdout.write(markdown_table(dashboard_rows(plan, numbers)) + "\n")
    for check in checks:
        sys.stdout.write(check.line() + "\n")
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
