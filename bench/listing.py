"""7: GET /api/tasks, the first page and a page 10,000 rows deep, with and without a status
filter, and GET /api/tasks/stats, over the read measurement's rows (a month of history)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import orjson

from bench import services
from bench.environment import BenchEnvironment
from bench.plan import Plan
from bench.processes import Service
from bench.results import Check, Listing, Load
from bench.wrk import run_wrk

PAGE_SIZE = 100  # the largest page the API gives
DEEP_PAGES = 100  # pages walked to the deep cursor: its page starts 10,000 rows down
FILTER = "COMPLETED"


@dataclass(frozen=True, slots=True)
class Page:
    key: str
    label: str
    status: str | None
    deep: bool


PAGES = (
    Page("first", "first page", None, deep=False),
    Page("first_filtered", f"first page, status={FILTER}", FILTER, deep=False),
    Page("deep", f"page {DEEP_PAGES * PAGE_SIZE:,} rows deep", None, deep=True),
    Page("deep_filtered", f"page {DEEP_PAGES * PAGE_SIZE:,} rows deep, status={FILTER}", FILTER,
         deep=True),
)  # fmt: skip


def _path(status: str | None, cursor: str | None = None) -> str:
    query: dict[str, str | int] = {"limit": PAGE_SIZE}
    if status is not None:
        query["status"] = status
    if cursor is not None:
        query["cursor"] = cursor
    return "/api/tasks?" + urlencode(query)


async def _walk(
    bench: BenchEnvironment, client: httpx.AsyncClient, status: str | None
) -> tuple[str, Check]:
    """Page down DEEP_PAGES times, once; the deep page's path, and whether the pages on the
    way and the deep one hold exactly the table's newest rows (of `status`), in order."""
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(DEEP_PAGES + 1):
        path = _path(status, cursor)
        answer = await client.get(path)
        answer.raise_for_status()
        page = orjson.loads(answer.content)
        seen += [item["task_id"] for item in page["items"]]
        deep_path, cursor = path, page["next_cursor"]
        if cursor is None:
            break
    expected = await bench.table.newest_ids(status, limit=(DEEP_PAGES + 1) * PAGE_SIZE)
    what = f"list{'' if status is None else f', status={status}'}"
    check = Check(
        f"{what}, paged {DEEP_PAGES + 1} x {PAGE_SIZE}",
        f"{len(seen):,} rows seen, {len(set(seen)):,} distinct;"
        f" {'the same as' if seen == expected else 'NOT'} the table's newest {len(expected):,},"
        " in order",
        seen == expected and len(seen) == (DEEP_PAGES + 1) * PAGE_SIZE,
    )
    return deep_path, check


async def _time(plan: Plan, service: Service, path: str, *, connections: int) -> tuple[Load, int]:
    """wrk on one URL: the measured run's load, and the answers of both runs not 2xx."""
    runs = [
        await run_wrk(service.url + path, "get.lua", seconds=seconds, connections=connections)
        for seconds in (plan.warmup_seconds, plan.measure_seconds)
    ]
    measured = runs[-1]
    failed = sum(run.non_2xx + run.socket_errors + run.timeouts for run in runs)
    return Load(measured.rate, measured.p50_ms, measured.p99_ms, measured.ok), failed


async def _stats_check(bench: BenchEnvironment, service: Service, failed: int) -> Check:
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        answer = await client.get("/api/tasks/stats")
    answer.raise_for_status()
    counts = {s: n for s, n in orjson.loads(answer.content)["counts"].items() if n}
    table = await bench.table.status_counts()
    return Check(
        "stats",
        f"{failed:,} answers not 2xx or failed; counts"
        f" {'equal' if counts == table else 'DIFFER from'} the table's"
        f" ({', '.join(f'{n:,} {s}' for s, n in sorted(table.items()))})",
        failed == 0 and counts == table,
    )


async def measure_listing(bench: BenchEnvironment, plan: Plan) -> tuple[Listing, list[Check]]:
    """The four pages and the stats, each timed by wrk on API x1 after its warm-up."""
    checks: list[Check] = []
    pages: dict[str, Load] = {}
    async with services.api(bench, processes=1) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            deep_paths = {}
            for status in (None, FILTER):
                deep_paths[status], check = await _walk(bench, client, status)
                checks.append(check)
        failures = 0
        for page in PAGES:
            path = deep_paths[page.status] if page.deep else _path(page.status)
            pages[page.key], failed = await _time(
                plan, service, path, connections=plan.list_connections
            )
            failures += failed
        checks.append(
            Check(
                "list pages",
                f"{sum(load.answers for load in pages.values()):,} measured answers,"
                f" {failures:,} not 2xx or failed",
                failures == 0,
            )
        )
        stats, failed = await _time(
            plan, service, "/api/tasks/stats", connections=plan.list_connections
        )
        checks.append(await _stats_check(bench, service, failed))
        service.check_alive()
    return Listing(pages=pages, stats=stats), checks
