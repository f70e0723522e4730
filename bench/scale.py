"""`python -m bench.scale [--smoke]`: how far one machine scales, API and worker processes added.

Each point runs 1-3 API processes (API_WORKERS) and 1, 2 or 4 worker processes together, each
started as `make api` / `make worker` start them, against the local MariaDB and RabbitMQ. wrk
submits the bench's one `simulated` task (worker delay 0: every task is pure overhead, HTTP,
insert, publish, delivery, claim and completion) on 64 connections while the workers run
them, so submissions and completions compete for the same cores as they would in production.
For the measured window it reports the accepted and completed rates and the cores each group
of processes used (API, workers, mariadbd, RabbitMQ's beam.smp, wrk), then waits until every
accepted task is done and checks the ledger: every 2xx has its row, every row is COMPLETED
exactly once (one attempt), no message is left and no answer was other than 2xx (so no 500).

The figures go in docs/scaling.md, which says where the curve flattens and why.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import uvloop

from bench import services
from bench.environment import BenchEnvironment, bench_environment
from bench.honesty import check_completed, reset
from bench.processes import Service, cpu_seconds, pids_named, process_tree
from bench.results import Check
from bench.wrk import ensure_wrk, run_wrk

logger = logging.getLogger("bench")

CONNECTIONS = 64
# (API processes, worker processes): workers first, then API processes on the most workers.
FULL_POINTS = ((1, 1), (1, 2), (1, 4), (2, 4), (3, 4))
SMOKE_POINTS = ((1, 1), (1, 2))
_DRAIN_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Run:
    warmup_seconds: float
    measure_seconds: float
    points: tuple[tuple[int, int], ...]


FULL = Run(warmup_seconds=3.0, measure_seconds=20.0, points=FULL_POINTS)
SMOKE = Run(warmup_seconds=1.0, measure_seconds=3.0, points=SMOKE_POINTS)


@dataclass(frozen=True, slots=True)
class Point:
    api_processes: int
    workers: int
    accepted_per_second: float  # created_at inside the measured window
    completed_per_second: float  # completed_at inside the measured window
    submit_p99_ms: float
    backlog_seconds: float  # from the load's end until the last task was done
    cores: dict[str, float]  # cores each group used in the measured window
    ledger: Check


def _groups(api: Service, workers: list[Service]) -> Callable[[], dict[str, list[int]]]:
    def pids() -> dict[str, list[int]]:
        named = pids_named("mariadbd", "beam.smp", "wrk")
        return {
            "API": process_tree(api.process.pid),
            "workers": [pid for worker in workers for pid in process_tree(worker.process.pid)],
            "MariaDB": named["mariadbd"],
            "RabbitMQ": named["beam.smp"],
            "wrk": named["wrk"],
        }

    return pids


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(map(cpu_seconds, pids)) for name, pids in groups.items()}


async def _wait_done(bench: BenchEnvironment, workers: list[Service]) -> None:
    """Until every row is COMPLETED (the rows stop growing once the load has stopped)."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT_SECONDS
    while True:
        counts = await bench.table.status_counts()
        if counts and counts.get("COMPLETED", 0) == sum(counts.values()):
            return
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"scale: tasks still not done: {counts}")
        await asyncio.sleep(0.2)


async def measure_point(
    bench: BenchEnvironment, run: Run, api_processes: int, workers: int
) -> Point:
    async with AsyncExitStack() as stack:
        started = [
            await stack.enter_async_context(
                services.worker(
                    bench,
                    name=f"worker-{index}",
                    processing_delay_min_seconds=0,
                    processing_delay_max_seconds=0,
                )
            )
            for index in range(workers)
        ]
        api = await stack.enter_async_context(services.api(bench, processes=api_processes))
        pids = _groups(api, started)
        load = asyncio.create_task(
            run_wrk(
                api.url + "/api/tasks",
                "submit.lua",
                # past the window's end: the load covers all of it
                seconds=run.warmup_seconds + run.measure_seconds + 2,
                connections=CONNECTIONS,
            )
        )
        await asyncio.sleep(run.warmup_seconds)
        groups = pids()
        before, window_start, clock = _cpu(groups), time.time(), time.monotonic()
        await asyncio.sleep(run.measure_seconds)
        after, window_end, elapsed = _cpu(groups), time.time(), time.monotonic() - clock
        result = await load
        load_end = time.time()
        await _wait_done(bench, started)
        backlog = time.time() - load_end
        times = await bench.table.completion_times()
    window = window_end - window_start
    created_in_window = sum(window_start <= made <= window_end for made, _ in times.values())
    done_in_window = sum(window_start <= done <= window_end for _, done in times.values())
    ledger = await check_completed(
        bench,
        what=f"scale, API x{api_processes}, {workers} worker(s)",
        queue=bench.queues.task_queue,
        tasks=await bench.table.count(),
    )
    rows = len(times)
    answered = result.non_2xx == 0 and result.ok <= rows <= result.ok + CONNECTIONS and ledger.ok
    ledger = Check(
        ledger.what,
        f"2xx {result.ok:,}, other answers {result.non_2xx:,}, rows {rows:,}; {ledger.detail}",
        answered,
    )
    await reset(bench, bench.queues.task_queue)
    return Point(
        api_processes=api_processes,
        workers=workers,
        accepted_per_second=created_in_window / window,
        completed_per_second=done_in_window / window,
        submit_p99_ms=result.p99_ms,
        backlog_seconds=backlog,
        cores={name: (after[name] - before[name]) / elapsed for name in before},
        ledger=ledger,
    )


def table(points: list[Point]) -> str:
    names = list(points[0].cores) if points else []
    head = [
        "API processes",
        "workers",
        "accepted/s",
        "completed/s",
        "submit p99",
        "backlog done after",
        *(f"cores: {name}" for name in names),
        "cores in all",
        "ledger",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for point in points:
        cells = [
            str(point.api_processes),
            str(point.workers),
            f"{point.accepted_per_second:,.0f}",
            f"{point.completed_per_second:,.0f}",
            f"{point.submit_p99_ms:.1f} ms",
            f"{point.backlog_seconds:.1f} s",
            *(f"{point.cores[name]:.2f}" for name in names),
            f"{sum(point.cores.values()):.2f} of {os.cpu_count()}",
            "agree" if point.ledger.ok else "DISAGREE",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def measure(run: Run) -> list[Point]:
    points = []
    async with bench_environment() as bench:
        for api_processes, workers in run.points:
            logger.info("scale: API x%d, %d worker(s)", api_processes, workers)
            point = await measure_point(bench, run, api_processes, workers)
            logger.info("honesty: %s", point.ledger.line())
            points.append(point)
    return points


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="two short points (CI)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    ensure_wrk()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        points = runner.run(measure(SMOKE if arguments.smoke else FULL))
    load = os.getloadavg()[0]
    sys.stdout.write(table(points) + f"\n\n1-min load after the run: {load:.2f}\n")
    return 0 if all(point.ledger.ok for point in points) else 1


if __name__ == "__main__":
    sys.exit(main())
