"""9: the CPU-bound task type, `hash_chain` (SHA-256 applied ROUNDS times, in the worker's
process pool), through our worker with CPU_POOL_SIZE = the machine's cores, against the same
chains computed by the same function in a plain loop in one process (bench.chain_loop).

The loop runs first, with nothing else running. Then the rows are inserted PENDING with their
type and payload and their messages published, as the drain does, and one worker starts. The
pool starts its processes for the first CPU-bound task, so the first tasks are a warm-up of
about `warmup_seconds` of every core (their completions are not counted); the rate is the
measured tasks' completions over the time from the warm-up's last `completed_at` to the last
one. The warm-up repeats the measured tasks' seeds, so the loop's digests vouch for every task.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import sys
import time
from typing import Any

from bench import services
from bench.environment import BenchEnvironment
from bench.honesty import check_completed, reset
from bench.plan import ROOT, Plan
from bench.processes import Service, run_to_end
from bench.results import Check, HashChain
from bench.store import new_ids

TASK_TYPE = "hash_chain"
ROUNDS = 100_000  # ~30 ms a chain here (about 0.3 us a round)
_FINAL = ("COMPLETED", "FAILED", "CANCELLED")
_POLL_SECONDS = 0.1
_TIMEOUT = 600.0


async def measure_hash_chain(bench: BenchEnvironment, plan: Plan) -> tuple[HashChain, Check]:
    cores = os.cpu_count() or 1
    measured = [f"seed-{n}" for n in range(plan.hash_chain_tasks)]
    loop_seconds, digests = await _run_loop(bench, measured)
    warmup = max(1, math.ceil(cores * plan.warmup_seconds * len(measured) / loop_seconds))
    seeds = [measured[n % len(measured)] for n in range(warmup + len(measured))]
    seed_of = await _queue(bench, seeds)
    # A few tasks per pool process in flight, so that a process never waits for the next one.
    async with services.worker(bench, cpu_pool_size=cores, worker_concurrency=4 * cores) as worker:
        await _wait_finished(bench, worker, len(seed_of))
        peak = worker.peak_bytes()
    rate = await _rate_after(bench, warmup)
    check = await _check(bench, seed_of, dict(zip(measured, digests, strict=True)))
    await reset(bench, bench.queues.task_queue)
    numbers = HashChain(
        tasks=len(measured),
        rounds=ROUNDS,
        pool_size=cores,
        rate=rate,
        loop_rate=len(measured) / loop_seconds,
        peak_rss=peak,
    )
    return numbers, check


async def _queue(bench: BenchEnvironment, seeds: list[str]) -> dict[str, str]:
    """One PENDING row and its message per seed; returns each task id's seed."""
    ids = new_ids(len(seeds))
    payloads: list[dict[str, Any]] = [{"rounds": ROUNDS, "seed": seed} for seed in seeds]
    await bench.table.insert(ids, status="PENDING", task_type=TASK_TYPE, payloads=payloads)
    await bench.queues.publish_tasks(ids, task_type=TASK_TYPE, payloads=payloads)
    return dict(zip(ids, seeds, strict=True))


async def _rate_after(bench: BenchEnvironment, warmup: int) -> float:
    """Completions per second after the first `warmup` of them."""
    finished = sorted(done for _, done in (await bench.table.completion_times()).values())
    if len(finished) <= warmup or finished[-1] <= finished[warmup - 1]:
        raise RuntimeError(f"hash_chain: {len(finished):,} completions, too few to time")
    return (len(finished) - warmup) / (finished[-1] - finished[warmup - 1])


async def _run_loop(bench: BenchEnvironment, seeds: list[str]) -> tuple[float, list[str]]:
    """bench.chain_loop over `seeds`: its seconds and each seed's digest."""
    seeds_file, out_file = bench.workdir / "chain-seeds.txt", bench.workdir / "chain-loop.json"
    seeds_file.write_text("\n".join(seeds))
    await run_to_end(
        "chain loop",
        [sys.executable, "-m", "bench.chain_loop", str(ROUNDS), str(seeds_file), str(out_file)],
        cwd=ROOT / "worker-service" / "src",
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        log=bench.workdir / "chain-loop.log",
    )
    found = json.loads(out_file.read_text())
    return float(found["seconds"]), [str(digest) for digest in found["digests"]]


async def _wait_finished(bench: BenchEnvironment, worker: Service, tasks: int) -> None:
    """Until every task is COMPLETED, FAILED or CANCELLED (the check tells them apart)."""
    deadline = time.monotonic() + _TIMEOUT
    while True:
        counts = await bench.table.status_counts()
        if (done := sum(counts.get(status, 0) for status in _FINAL)) >= tasks:
            return
        worker.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker.name}: {done:,} of {tasks:,} hash_chain tasks finished")
        await asyncio.sleep(_POLL_SECONDS)


def _sha256_chain(rounds: int, seed: str) -> str:
    """SHA-256 applied `rounds` times to `seed`, written here again: the loop's digests are
    checked against it, so that a `chain` that skipped its work would not pass unseen."""
    digest = hashlib.sha256(seed.encode()).digest()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


async def _check(
    bench: BenchEnvironment, seed_of: dict[str, str], expected: dict[str, str]
) -> Check:
    """Every task COMPLETED once, each with the loop's digest for its seed, and the loop's
    first digest the same as _sha256_chain's."""
    queue = bench.queues.task_queue
    done = await check_completed(
        bench, what="hash_chain, our worker", queue=queue, tasks=len(seed_of)
    )
    results = await bench.table.results()
    right = sum(
        _digest(results.get(task_id)) == expected[seed] for task_id, seed in seed_of.items()
    )
    first = next(iter(expected))
    loop_right = _sha256_chain(ROUNDS, first) == expected[first]
    detail = f"{done.detail}; {right:,} of {len(seed_of):,} have the loop's digest"
    if not loop_right:
        detail += "; the loop's first digest is not SHA-256 applied ROUNDS times"
    return Check(done.what, detail, done.ok and right == len(seed_of) and loop_right)


def _digest(found: tuple[str, Any] | None) -> str | None:
    """The digest of a COMPLETED task's result, when it ran ROUNDS rounds."""
    if found is None or found[0] != "COMPLETED" or not isinstance(found[1], dict):
        return None
    result: dict[str, Any] = found[1]
    return str(result.get("digest")) if result.get("rounds") == ROUNDS else None
