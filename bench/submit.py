"""1 and 6: POST /api/tasks under wrk's 64 connections and at a fixed rate, for our API
(one and two processes) and for the baselines, the hello-world app and the Celery and
Dramatiq peers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import check_accepted, reset
from bench.paced import PacedResult, post_request, run_paced
from bench.peers import PEERS, peer_api
from bench.plan import Plan
from bench.processes import Service
from bench.results import Check, Load, Submit, percentile
from bench.wrk import run_wrk

BODY = (
    b'{"title": "Resize images", "description": "Make thumbnails for album 42",'
    b' "metadata": {"album_id": 42, "sizes": [128, 512]}}'
)

METRICS_OFF = "api1_metrics_off"

Starter = Callable[[BenchEnvironment], AbstractAsyncContextManager[Service]]


@dataclass(frozen=True, slots=True)
class Target:
    key: str
    label: str
    start: Starter
    queue: str | None  # where its accepted tasks go; None for the hello-world app


def targets(bench: BenchEnvironment) -> list[Target]:
    return [
        Target("hello", "hello-world", services.hello, None),
        Target("api1", "API x1", lambda b: services.api(b, processes=1), bench.queues.task_queue),
        Target("api2", "API x2", lambda b: services.api(b, processes=2), bench.queues.task_queue),
        # What the metrics cost: the same API with METRICS_ENABLED=false.
        Target(
            METRICS_OFF,
            "API x1, metrics off",
            lambda b: services.api(b, processes=1, metrics_enabled=False),
            bench.queues.task_queue,
        ),
        *(
            Target(peer.key, f"{peer.label} peer", partial(peer_api, peer=peer), peer.queue)
            for peer in PEERS
        ),
    ]


def paced_load(result: PacedResult) -> Load:
    """Latency of the measured requests; the rate is their 2xx answers over the time from the
    first one sent to the last answer, which is below the schedule's when the server fell behind."""
    measured = result.measured
    latencies = [answer.latency * 1000 for answer in measured]
    ok = [answer for answer in measured if 200 <= answer.status < 300]
    span = (
        max(a.sent_wall + a.latency for a in ok) - min(a.sent_wall for a in measured) if ok else 0
    )
    rate = len(ok) / max(span, result.seconds) if ok else 0.0
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Load(rate, p50, p99, len(ok), fell_behind_after=result.fell_behind_after)


async def measure_submit(
    bench: BenchEnvironment, plan: Plan, target: Target
) -> tuple[Submit, list[Check]]:
    async with target.start(bench) as service:
        await asyncio.sleep(plan.settle_seconds)
        idle = service.rss_bytes()
        closed, closed_check = await _closed(bench, plan, target, service)
        paced, paced_check = await _paced(bench, plan, target, service)
        service.check_alive()
        peak = service.peak_bytes()
    checks = [check for check in (closed_check, paced_check) if check is not None]
    return Submit(closed=closed, paced=paced, idle_rss=idle, peak_rss=peak), checks


async def _closed(
    bench: BenchEnvironment, plan: Plan, target: Target, service: Service
) -> tuple[Load, Check | None]:
    url = service.url + "/api/tasks"
    runs = [
        await run_wrk(url, "submit.lua", seconds=seconds, connections=plan.connections)
        for seconds in (plan.warmup_seconds, plan.measure_seconds)
    ]
    measured = runs[-1]
    load = Load(measured.rate, measured.p50_ms, measured.p99_ms, measured.ok)
    if target.queue is None:
        return load, None
    # Each run may leave one request per connection unanswered when it stops.
    unanswered = sum(plan.connections + run.socket_errors + run.timeouts for run in runs)
    check = await check_accepted(
        bench,
        what=f"submit, {target.label}, {plan.connections} connections",
        queue=target.queue,
        ok=sum(run.ok for run in runs),
        unanswered=unanswered,
    )
    await reset(bench, target.queue)
    return load, check


async def _paced(
    bench: BenchEnvironment, plan: Plan, target: Target, service: Service
) -> tuple[Load, Check | None]:
    assert service.port is not None
    result = await run_paced(
        host="127.0.0.1",
        port=service.port,
        request=post_request("127.0.0.1", service.port, "/api/tasks", BODY),
        rate=plan.fixed_rate,
        warmup=plan.warmup_seconds,
        seconds=plan.measure_seconds,
    )
    load = paced_load(result)
    if target.queue is None:
        return load, None
    check = await check_accepted(
        bench,
        what=f"submit, {target.label}, {plan.fixed_rate} req/s",
        queue=target.queue,
        ok=result.ok,
        unanswered=sum(answer.status == 0 for answer in result.answers),
    )
    await reset(bench, target.queue)
    return load, check
