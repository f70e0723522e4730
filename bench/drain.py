"""3: a queue of tasks, queued before the worker starts, worked off with zero delay, by our
worker (one process) and by each peer's worker (Celery `-c 2`, Dramatiq one process)."""

from __future__ import annotations

import asyncio
import time

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import check_completed, reset
from bench.peers import Peer, peer_enqueue, peer_worker
from bench.plan import Plan
from bench.processes import Service, process_tree
from bench.results import Check, Drain
from bench.store import new_ids

_POLL_SECONDS = 0.1
_DRAIN_TIMEOUT = 600.0


async def time_drain(bench: BenchEnvironment, service: Service, tasks: int) -> float:
    """Tasks per second from the first task's completed_at to the last one's.

    Start-up is left out on purpose (Python's imports and Celery's own boot would swamp a short
    drain), and the rows' own timestamps are exact where polling would not be."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while (completed := (await bench.table.status_counts()).get("COMPLETED", 0)) < tasks:
        service.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service.name}: {completed:,} of {tasks:,} done after drain")
        await asyncio.sleep(_POLL_SECONDS)
    finished = sorted(done for _, done in (await bench.table.completion_times()).values())
    if len(finished) < 2 or finished[-1] <= finished[0]:
        raise RuntimeError(f"{service.name}: too few completions to time")
    return (len(finished) - 1) / (finished[-1] - finished[0])


async def drain_ours(bench: BenchEnvironment, plan: Plan) -> tuple[Drain, Check]:
    ids = new_ids(plan.drain_tasks)
    await bench.table.insert(ids, status="PENDING")
    await bench.queues.publish_tasks(ids)
    async with services.worker(
        bench,
        processing_delay_min_seconds=0,
        processing_delay_max_seconds=0,
        worker_concurrency=plan.drain_concurrency,
    ) as worker:
        rate = await time_drain(bench, worker, len(ids))
        peak = worker.peak_bytes()
    queue = bench.queues.task_queue
    check = await check_completed(bench, what="drain, our worker", queue=queue, tasks=len(ids))
    await reset(bench, queue)
    return Drain(rate=rate, processes=1, peak_rss=peak), check


async def drain_peer(bench: BenchEnvironment, plan: Plan, peer: Peer) -> tuple[Drain, Check]:
    """The same for a peer: its tasks queued by its own library (`enqueue_all`), then timed
    the same way (its task sets `completed_at` from Python's clock)."""
    ids = new_ids(plan.peer_drain_tasks)
    await bench.table.insert(ids, status="PENDING")
    await peer_enqueue(bench, peer, ids)
    async with peer_worker(bench, peer) as worker:
        rate = await time_drain(bench, worker, len(ids))
        peak, tree = worker.peak_bytes(), len(process_tree(worker.process.pid))
    check = await check_completed(
        bench, what=f"drain, {peer.label} worker", queue=peer.queue, tasks=len(ids)
    )
    await reset(bench, peer.queue)
    return Drain(rate=rate, processes=peer.processes, peak_rss=peak, peak_processes=tree), check
