"""2: GET /api/tasks/{id} by random id, with many rows in the table (a month of history,
which the list and stats measurements read too)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import reset
from bench.plan import Plan
from bench.results import Check, Load
from bench.store import new_ids
from bench.wrk import run_wrk, write_ids


async def load_rows(bench: BenchEnvironment, plan: Plan) -> tuple[list[str], float]:
    """Fill the table with a month of tasks, most of them COMPLETED; returns their ids and
    the seconds it took."""
    started = time.monotonic()
    ids = new_ids(plan.read_rows)
    await bench.table.insert_history(ids, now=datetime.now(UTC))
    return ids, time.monotonic() - started


async def measure_read(
    bench: BenchEnvironment, plan: Plan, ids: list[str], *, processes: int
) -> tuple[Load, Check]:
    sample = write_ids(bench.workdir / "read-ids.txt", random.sample(ids, plan.read_sample_ids))
    async with services.api(bench, processes=processes) as service:
        url = service.url
        runs = [
            await run_wrk(
                url,
                "read.lua",
                seconds=seconds,
                connections=plan.connections,
                script_args=(str(sample),),
            )
            for seconds in (plan.warmup_seconds, plan.measure_seconds)
        ]
        service.check_alive()
    rows = await bench.table.count()
    failures = sum(run.non_2xx + run.socket_errors + run.timeouts for run in runs)
    measured = runs[-1]
    check = Check(
        f"read, API x{processes}, {rows:,} rows",
        f"{sum(run.requests for run in runs):,} answers, {failures:,} not 2xx or failed,"
        f" rows {rows:,} (loaded {len(ids):,})",
        failures == 0 and rows == len(ids),
    )
    return Load(measured.rate, measured.p50_ms, measured.p99_ms, measured.ok), check


async def clear_rows(bench: BenchEnvironment) -> None:
    await reset(bench)
