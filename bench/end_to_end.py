"""4: submit -> COMPLETED, minus the simulated delay, at a fixed rate.

The simulated delay is set to zero, so nothing has to be subtracted. For each task the clock
starts when the request was sent (the client's wall clock) and stops at the row's completed_at
(MariaDB's UTC_TIMESTAMP(6), the same machine's clock): HTTP, the insert, the publish, the
delivery, the claim and the completion are all inside.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import check_completed, reset
from bench.paced import Answer, post_request, run_paced
from bench.plan import Plan
from bench.results import Check, EndToEnd, percentile
from bench.submit import BODY

_COMPLETION_TIMEOUT = 120.0


async def _wait_completed(bench: BenchEnvironment, rows: int) -> None:
    deadline = time.monotonic() + _COMPLETION_TIMEOUT
    while (await bench.table.status_counts()).get("COMPLETED", 0) < rows:
        if time.monotonic() > deadline:
            raise TimeoutError("end-to-end: tasks still not COMPLETED")
        await asyncio.sleep(0.2)


def _task_id(answer: Answer) -> str:
    task_id: str = orjson.loads(answer.body)["task_id"]
    return task_id


async def measure_end_to_end(bench: BenchEnvironment, plan: Plan) -> tuple[EndToEnd, list[Check]]:
    queue = bench.queues.task_queue
    async with services.worker(
        bench, processing_delay_min_seconds=0, processing_delay_max_seconds=0
    ) as worker:
        await asyncio.sleep(plan.settle_seconds)
        worker_idle = worker.rss_bytes()
        async with services.api(bench, processes=1) as api:
            assert api.port is not None
            result = await run_paced(
                host="127.0.0.1",
                port=api.port,
                request=post_request("127.0.0.1", api.port, "/api/tasks", BODY),
                rate=plan.end_to_end_rate,
                warmup=plan.warmup_seconds,
                seconds=plan.measure_seconds,
            )
            unanswered = sum(answer.status == 0 for answer in result.answers)
            await _wait_completed(bench, result.ok)
            times = await bench.table.completion_times()
    accepted = [
        times[_task_id(a)] + (a.sent_wall,) for a in result.measured if 200 <= a.status < 300
    ]
    overhead = [(done - sent) * 1000 for _, done, sent in accepted]
    inside = [(done - created) * 1000 for created, done, _ in accepted]
    checks = [
        await check_completed(bench, what="end-to-end", queue=queue, tasks=result.ok),
        Check(
            "end-to-end answers",
            f"{result.ok:,} 2xx, {unanswered:,} failed, {len(times):,} COMPLETED rows",
            unanswered == 0 and len(times) == result.ok,
        ),
    ]
    await reset(bench, queue)
    numbers = EndToEnd(
        overhead_p50_ms=percentile(overhead, 50),
        overhead_p99_ms=percentile(overhead, 99),
        server_p50_ms=percentile(inside, 50),
        server_p99_ms=percentile(inside, 99),
        tasks=len(accepted),
        worker_idle_rss=worker_idle,
    )
    return numbers, checks
