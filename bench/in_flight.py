"""5: one worker process holding many tasks in flight with the real 5-10 s delay."""

from __future__ import annotations

import asyncio
import time

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import check_completed, reset
from bench.plan import Plan
from bench.results import Check, InFlight
from bench.store import new_ids

_SAMPLE_SECONDS = 0.5


async def measure_in_flight(bench: BenchEnvironment, plan: Plan) -> tuple[InFlight, Check]:
    """Queue enough tasks to keep `plan.in_flight` busy, start the worker, skip the warm-up
    (every slot starts at once, so completions bunch up at first), then count completions
    for the measuring window and sample how many tasks are PROCESSING."""
    ids = new_ids(plan.in_flight_tasks)
    await bench.table.insert(ids, status="PENDING")
    await bench.queues.publish_tasks(ids)
    low, high = plan.in_flight_delay
    async with services.worker(
        bench,
        processing_delay_min_seconds=low,
        processing_delay_max_seconds=high,
        worker_concurrency=plan.in_flight,
    ) as worker:
        await asyncio.sleep(plan.in_flight_warmup_seconds)
        counts = await bench.table.status_counts()
        started, done_before = time.monotonic(), counts.get("COMPLETED", 0)
        samples: list[int] = []
        while time.monotonic() - started < plan.measure_seconds:
            worker.check_alive()
            samples.append((await bench.table.status_counts()).get("PROCESSING", 0))
            await asyncio.sleep(_SAMPLE_SECONDS)
        counts = await bench.table.status_counts()
        rate = (counts.get("COMPLETED", 0) - done_before) / (time.monotonic() - started)
        peak = worker.peak_bytes()
    queue = bench.queues.task_queue
    check = await check_completed(
        bench, what="in flight", queue=queue, tasks=len(ids), pending_ok=True
    )
    await reset(bench, queue)
    numbers = InFlight(
        rate=rate,
        in_flight_min=min(samples),
        in_flight_mean=sum(samples) / len(samples),
        peak_rss=peak,
    )
    return numbers, check
