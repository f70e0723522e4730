"""9: scheduled tasks. The outbox dispatcher's pass with `scheduled_rows` tasks waiting for
later in the table, against the same pass on an empty table; then how late due tasks start
(started_at - run_at) through the API and a worker, with those rows still waiting, against
DISPATCH_INTERVAL_SECONDS.

A pass is what the API's dispatcher does each time it wakes: its two SELECTs of
idx_tasks_undispatched (the tasks to send at once, the scheduled ones that are due), the
UPDATE of those it published, and the wait until the next run_at. The empty table is a
second scratch database of the same schema, and the passes take turns on the two, so that
whatever else the machine does falls on both alike. Passes are timed with none due, and with
DUE_PER_PASS tasks that fell due since the last one (stored through the repository as the
API stores them); their publish is recorded in memory (a broker's confirm is the same with
or without the rows waiting), so the figure is the database's share of a pass.

`python -m bench.scheduled [--smoke]` runs this measurement alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import uvloop

from bench import services
from bench.environment import BenchEnvironment, bench_environment
from bench.honesty import reset
from bench.plan import FULL, SMOKE, Plan
from bench.report import markdown_table, scheduled_rows
from bench.results import Check, PassTime, Scheduled, percentile
from common.mysql import Database, MySQLTaskRepository
from common.mysql.events import in_clause
from common.mysql.schema import INIT_SQL, one_connection
from common.settings import Settings, load_settings
from common.tasks import NewTask, TaskRecord
from testkit.scratch import database_url, scratch_database

DUE_PER_PASS = 5
WARMUP_PASSES = 20
LEAD_SECONDS = 2.0  # each measured task's run_at, after its POST goes out
WAITING_FROM = timedelta(hours=1)  # the loaded rows' run_at: from an hour ahead, 2 s apart
_LOAD_CHUNK = 100_000  # rows per INSERT ... SELECT
_LOADERS = 2
_TIMEOUT_SECONDS = 120.0

# 0 .. 99,999 from five digit tables, in MariaDB and MySQL alike.
_DIGITS = (
    "(SELECT 0 AS d UNION ALL " + " UNION ALL ".join(f"SELECT {d}" for d in range(1, 10)) + ")"
)
_NUMBERS = (
    "SELECT " + " + ".join(f"d{k}.d * {10**k}" for k in range(5)) + " AS n FROM "
    + " CROSS JOIN ".join(f"{_DIGITS} AS d{k}" for k in range(5))
)  # fmt: skip


def _sql_time(value: datetime) -> str:
    return "'" + value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds") + "'"


def _chunk_statement(prefix: str, base: int, count: int, now: datetime) -> str:
    """`count` PENDING, undispatched rows numbered from `base`, each run_at 2 s after the
    one before from WAITING_FROM ahead; ids ascending, so that the load appends to the key."""
    at = _sql_time(now)
    first = _sql_time(now + WAITING_FROM)
    return (
        "INSERT INTO tasks (id, title, description, status, run_at, created_at, updated_at)"
        f" SELECT CONCAT('{prefix}', LPAD({base} + n, 12, '0')), 'bench task',"
        f" 'a scheduled row loaded by the benchmark', 'PENDING',"
        f" {first} + INTERVAL ({base} + n) * 2 SECOND, {at}, {at}"
        f" FROM ({_NUMBERS}) AS numbers WHERE n < {count} ORDER BY n"
    )


async def load_waiting(bench: BenchEnvironment, rows: int) -> float:
    """Insert `rows` tasks scheduled for later, a few INSERT ... SELECTs on a few connections,
    then recount task_counts; returns the seconds it took."""
    started = time.monotonic()
    prefix = f"{uuid.uuid4().hex[:8]}-0000-4000-8000-"
    now = datetime.now(UTC)
    statements = [
        _chunk_statement(prefix, base, min(_LOAD_CHUNK, rows - base), now)
        for base in range(0, rows, _LOAD_CHUNK)
    ]

    async def load(share: Sequence[str]) -> None:
        async with one_connection(bench.settings.database) as cursor:
            for statement in share:
                await cursor.execute(statement)

    await asyncio.gather(*(load(statements[k::_LOADERS]) for k in range(_LOADERS)))
    await bench.table.recount()
    return time.monotonic() - started


async def _fetch(bench: BenchEnvironment, sql: str) -> list[tuple[Any, ...]]:
    async with one_connection(bench.settings.database) as cursor:
        await cursor.execute(sql)
        return list(await cursor.fetchall())


async def _waiting(bench: BenchEnvironment) -> int:
    """Tasks not yet dispatched and not yet due."""
    [(count,)] = await _fetch(
        bench,
        "SELECT COUNT(*) FROM tasks WHERE dispatched_at IS NULL AND status = 'PENDING'"
        " AND run_at > UTC_TIMESTAMP(6)",
    )
    return int(count)


@dataclass
class Table:
    """One database the passes run on: a dispatcher's repository, a connection for the
    setup, and what its passes did."""

    repository: MySQLTaskRepository
    cursor: Any
    seconds: list[float] = field(default_factory=list)  # each timed pass's
    sent: list[int] = field(default_factory=list)  # how many each timed pass published
    published: list[str] = field(default_factory=list)  # by every pass, untimed ones too

    async def publish(self, record: TaskRecord) -> bool:
        self.published.append(record.task_id)
        return True

    def times(self) -> PassTime:
        return PassTime(percentile(self.seconds, 50) * 1000, percentile(self.seconds, 99) * 1000)

    def check(self, what: str, due: int) -> Check:
        wanted = (len(self.seconds) + WARMUP_PASSES) * due
        return Check(
            f"scheduled: dispatcher passes, {due} due each, {what}",
            f"{len(self.published):,} published ({len(set(self.published)):,} distinct) of"
            f" {wanted:,} due; {sum(n == due for n in self.sent):,} of"
            f" {len(self.sent):,} timed passes sent exactly their {due}",
            len(self.published) == len(set(self.published)) == wanted
            and all(n == due for n in self.sent),
        )


@contextlib.asynccontextmanager
async def _table(settings: Settings) -> AsyncIterator[Table]:
    database = Database(settings)
    await database.start()
    try:
        async with one_connection(settings.database) as cursor:
            yield Table(MySQLTaskRepository(database), cursor)
    finally:
        await database.close()


async def _fall_due(table: Table, count: int) -> None:
    """`count` tasks stored as the API stores them, then dated back: stored a second before
    their run_at, which has just passed (so the dispatcher sends them however new they are)."""
    run_at = datetime.now(UTC) - timedelta(milliseconds=10)
    tasks = [
        NewTask(str(uuid.uuid4()), "due", "a scheduled task", None, run_at=run_at)
        for _ in range(count)
    ]
    await table.repository.create_many(tasks)
    await table.cursor.execute(
        "UPDATE tasks SET created_at = run_at - INTERVAL 1 SECOND,"
        f" updated_at = run_at - INTERVAL 1 SECOND WHERE id IN ({in_clause(count)})",
        [task.task_id for task in tasks],
    )


async def time_passes(
    settings: Settings, twins: Sequence[Settings], passes: int, *, due: int
) -> list[Table]:
    """`passes` dispatcher passes on each of the `twins` databases (after WARMUP_PASSES
    untimed ones), taking turns, so that whatever else the machine does falls on each alike;
    each pass after `due` tasks fell due, with the API's dispatcher's settings."""
    async with contextlib.AsyncExitStack() as stack:
        tables = [await stack.enter_async_context(_table(twin)) for twin in twins]
        for number in range(WARMUP_PASSES + passes):
            # Each goes first every other turn: neither always finds the other's caches warm.
            for table in tables[:: 1 if number % 2 else -1]:
                if due:
                    await _fall_due(table, due)
                started = time.perf_counter()
                count = await table.repository.dispatch_undispatched(
                    publish=table.publish,
                    limit=settings.dispatch_batch_size,
                    min_age_seconds=settings.dispatch_min_age_seconds,
                )
                await table.repository.next_due_in()
                if number >= WARMUP_PASSES:
                    table.seconds.append(time.perf_counter() - started)
                    table.sent.append(count)
    return tables


async def _submit_paced(url: str, tasks: int, seconds: float) -> tuple[list[str], int]:
    """POST `tasks` tasks evenly over `seconds` (open loop: each on its schedule, whatever the
    answers before it did), each due LEAD_SECONDS after it goes out; their ids, and the
    answers that were not 202."""
    refused = 0
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one() -> str | None:
            nonlocal refused
            run_at = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)
            body = {"title": "bench task", "description": "due", "run_at": run_at.isoformat()}
            answer = await client.post("/api/tasks", json=body)
            if answer.status_code != 202:
                refused += 1
                return None
            task_id: str = orjson.loads(answer.content)["task_id"]
            return task_id

        posts = []
        for k in range(tasks):
            await asyncio.sleep(max(0.0, start + k * seconds / tasks - time.monotonic()))
            posts.append(asyncio.create_task(one()))
        ids = await asyncio.gather(*posts)
    return [task_id for task_id in ids if task_id is not None], refused


async def _completed(bench: BenchEnvironment, tasks: int) -> list[tuple[Any, ...]]:
    """Once `tasks` rows are COMPLETED: each one's created_at, run_at, started_at, attempts."""
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    sql = (
        "SELECT id, created_at, run_at, started_at, attempts FROM tasks WHERE status = 'COMPLETED'"
    )
    while len(rows := await _fetch(bench, sql)) < tasks:
        if time.monotonic() > deadline:
            raise TimeoutError(f"scheduled: {len(rows):,} of {tasks:,} COMPLETED")
        await asyncio.sleep(0.2)
    return rows


async def measure_lateness(
    bench: BenchEnvironment, plan: Plan
) -> tuple[list[float], int, list[Check]]:
    """`scheduled_tasks` tasks submitted through the API over `scheduled_spread_seconds`,
    each due LEAD_SECONDS after it was sent, run by a worker (no simulated delay): each one's
    started_at - run_at, in seconds."""
    async with (
        services.worker(
            bench, processing_delay_min_seconds=0, processing_delay_max_seconds=0
        ) as worker,
        services.api(bench, processes=1) as api,
    ):
        ids, refused = await _submit_paced(
            api.url, plan.scheduled_tasks, plan.scheduled_spread_seconds
        )
        rows = await _completed(bench, len(ids))
        api.check_alive()
        worker.check_alive()
    late = [(started - run_at).total_seconds() for _, _, run_at, started, _ in rows]
    early = sum(seconds < 0 for seconds in late)
    attempts = sum(int(row[4]) for row in rows)
    depth = await bench.queues.depth(bench.queues.task_queue)
    checks = [
        Check(
            "scheduled: due tasks through the API",
            f"{len(ids):,} 202 ({refused:,} not); {len(rows):,} COMPLETED with {attempts:,}"
            f" attempts, {early:,} started before their run_at, {depth:,} messages left",
            refused == 0
            and {row[0] for row in rows} == set(ids)
            and attempts == len(rows)
            and early == 0
            and depth == 0,
        )
    ]
    # A POST answered only after its run_at (a slow machine) was published by the API at
    # once: its lateness counts, and the table says how many there were.
    stored_late = sum(created >= run_at for _, created, run_at, _, _ in rows)
    return late, stored_late, checks


@contextlib.asynccontextmanager
async def _empty_twin(bench: BenchEnvironment) -> AsyncIterator[Settings]:
    """Settings for a second scratch database of the same schema, left empty."""
    async with scratch_database(INIT_SQL.read_text()) as address:
        yield load_settings(
            **{**bench.settings.model_dump(), "database_url": database_url(address)}
        )


async def measure_scheduled(bench: BenchEnvironment, plan: Plan) -> tuple[Scheduled, list[Check]]:
    """The load, the passes on the loaded table and on an empty twin by turns (none due, then
    DUE_PER_PASS due), then the lateness through the API and a worker."""
    load_seconds = await load_waiting(bench, plan.scheduled_rows)
    async with _empty_twin(bench) as twin:
        twins = (twin, bench.settings)
        idle = await time_passes(bench.settings, twins, plan.scheduled_passes, due=0)
        due = await time_passes(bench.settings, twins, plan.scheduled_passes, due=DUE_PER_PASS)
    waiting = f"{plan.scheduled_rows:,} waiting"
    checks = [
        *(table.check(what, 0) for table, what in zip(idle, ("empty table", waiting), strict=True)),
        *(
            table.check(what, DUE_PER_PASS)
            for table, what in zip(due, ("empty table", waiting), strict=True)
        ),
    ]
    late, stored_late, lateness_checks = await measure_lateness(bench, plan)
    left = await _waiting(bench)
    checks += [
        *lateness_checks,
        Check(
            "scheduled: rows waiting for later left alone",
            f"{left:,} of {plan.scheduled_rows:,} still PENDING, undispatched and not due",
            left == plan.scheduled_rows,
        ),
    ]
    await reset(bench, bench.queues.task_queue)
    numbers = Scheduled(
        rows=plan.scheduled_rows,
        load_seconds=load_seconds,
        passes=plan.scheduled_passes,
        due_per_pass=DUE_PER_PASS,
        idle_empty=idle[0].times(),
        idle_loaded=idle[1].times(),
        due_empty=due[0].times(),
        due_loaded=due[1].times(),
        tasks=len(late),
        stored_late=stored_late,
        spread_seconds=plan.scheduled_spread_seconds,
        late_p50_ms=percentile(late, 50) * 1000,
        late_p99_ms=percentile(late, 99) * 1000,
        late_max_ms=max(late, default=float("nan")) * 1000,
        interval_seconds=bench.settings.dispatch_interval_seconds,
    )
    return numbers, checks


def main() -> int:
    """This measurement alone, in a scratch database and vhost of its own: its rows of the
    table and its honesty checks."""
    parser = argparse.ArgumentParser(prog="python -m bench.scheduled")
    parser.add_argument("--smoke", action="store_true", help="the smoke run's sizes")
    plan = SMOKE if parser.parse_args().smoke else FULL
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    async def run() -> tuple[Scheduled, list[Check]]:
        async with bench_environment() as bench:
            return await measure_scheduled(bench, plan)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        numbers, checks = runner.run(run())
    sys.stdout.write(markdown_table(scheduled_rows(plan, numbers)) + "\n")
    for check in checks:
        sys.stdout.write(check.line() + "\n")
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
